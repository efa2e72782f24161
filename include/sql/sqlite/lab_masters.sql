-- lab masters of one chunk: (last_update_dtime, report_form_no) from the chunk's first pair to its last, inclusive (bounds from lab_plan.sql).
-- SQLite (the demo): timestamps are text; datetime() puts both sides in 'YYYY-MM-DD HH:MM:SS'.
-- Bind parameters: :first_dtime, :first_form_no, :last_dtime, :last_form_no. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:labmaster:m}}
FROM {{view:labmaster}} m
WHERE datetime(m.last_update_dtime) >= datetime(:first_dtime)
  AND datetime(m.last_update_dtime) <= datetime(:last_dtime)
  AND (datetime(m.last_update_dtime) > datetime(:first_dtime) OR COALESCE(m.report_form_no, ' ') >= :first_form_no)
  AND (datetime(m.last_update_dtime) < datetime(:last_dtime) OR COALESCE(m.report_form_no, ' ') <= :last_form_no)
ORDER BY datetime(m.last_update_dtime), COALESCE(m.report_form_no, ' '), m.org_code, m.patient_id, m.event_type, m.event_no
