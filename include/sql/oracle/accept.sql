-- Mutual-recognition accept records with record_time in [:since, :until) (their only time column), oldest first.
-- Oracle: DATE comparisons with bound datetimes (CAST on the bind, never on the column, so an index on the column is used); no LIMIT: the caller streams with fetchmany.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:sehr_accept_record:r}}
FROM {{view:sehr_accept_record}} r
WHERE r.record_time >= CAST(:since AS DATE)
  AND r.record_time < CAST(:until AS DATE)
ORDER BY r.record_time, r.new_event_no, r.hr_org_code, r.hr_report_form_no, r.code, r.id_no
