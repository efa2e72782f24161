-- Mutual-recognition accept records with record_time in [:since, :until) (their only time column), oldest first.
-- SQLite (the demo): timestamps are text; datetime() puts both sides in 'YYYY-MM-DD HH:MM:SS'.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:sehr_accept_record:r}}
FROM {{view:sehr_accept_record}} r
WHERE datetime(r.record_time) >= datetime(:since)
  AND datetime(r.record_time) < datetime(:until)
ORDER BY datetime(r.record_time), r.new_event_no, r.hr_org_code, r.hr_report_form_no, r.code, r.id_no
