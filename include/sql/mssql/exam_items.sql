-- exam sub-items of the masters of one chunk (the same chunk predicate as exam_masters.sql, on the master), so a batch holds every master with exactly its own sub-items.
-- SQL Server: datetime2 binds.
-- Bind parameters: :first_dtime, :first_form_no, :last_dtime, :last_form_no. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:exam_subitem:s}}
FROM {{view:exam_subitem}} s
WHERE EXISTS (
  SELECT 1
  FROM {{view:exammaster}} m
  WHERE m.org_code = s.org_code
    AND m.event_no = s.event_no
    AND m.report_form_no = s.report_form_no
    AND m.last_update_dtime >= CAST(:first_dtime AS datetime2)
    AND m.last_update_dtime <= CAST(:last_dtime AS datetime2)
    AND (m.last_update_dtime > CAST(:first_dtime AS datetime2) OR COALESCE(m.report_form_no, ' ') >= :first_form_no)
    AND (m.last_update_dtime < CAST(:last_dtime AS datetime2) OR COALESCE(m.report_form_no, ' ') <= :last_form_no)
)
ORDER BY s.org_code, s.event_no, s.report_form_no, s.exam_item_code
