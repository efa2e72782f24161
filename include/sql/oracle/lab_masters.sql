-- lab masters of one chunk: (last_update_dtime, report_form_no) from the chunk's first pair to its last, inclusive (bounds from lab_plan.sql).
-- Oracle: DATE comparisons with bound datetimes (CAST on the bind, never on the column, so an index on the column is used); no LIMIT: the caller streams with fetchmany.
-- Bind parameters: :first_dtime, :first_form_no, :last_dtime, :last_form_no. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:labmaster:m}}
FROM {{view:labmaster}} m
WHERE m.last_update_dtime >= CAST(:first_dtime AS DATE)
  AND m.last_update_dtime <= CAST(:last_dtime AS DATE)
  AND (m.last_update_dtime > CAST(:first_dtime AS DATE) OR COALESCE(m.report_form_no, ' ') >= :first_form_no)
  AND (m.last_update_dtime < CAST(:last_dtime AS DATE) OR COALESCE(m.report_form_no, ' ') <= :last_form_no)
ORDER BY m.last_update_dtime, COALESCE(m.report_form_no, ' '), m.org_code, m.patient_id, m.event_type, m.event_no
