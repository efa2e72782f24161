-- lab sub-items of the masters of one chunk (the same chunk predicate as lab_masters.sql, on the master), so a batch holds every master with exactly its own sub-items.
-- PostgreSQL family (PostgreSQL, KingbaseES, openGauss): timestamp binds.
-- Bind parameters: :first_dtime, :first_form_no, :last_dtime, :last_form_no. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:lab_subitem:s}}
FROM {{view:lab_subitem}} s
WHERE EXISTS (
  SELECT 1
  FROM {{view:labmaster}} m
  WHERE m.org_code = s.org_code
    AND m.event_no = s.event_no
    AND m.report_form_no = s.report_form_no
    AND m.last_update_dtime >= CAST(:first_dtime AS timestamp)
    AND m.last_update_dtime <= CAST(:last_dtime AS timestamp)
    AND (m.last_update_dtime > CAST(:first_dtime AS timestamp) OR COALESCE(m.report_form_no, ' ') >= :first_form_no)
    AND (m.last_update_dtime < CAST(:last_dtime AS timestamp) OR COALESCE(m.report_form_no, ' ') <= :last_form_no)
)
ORDER BY s.org_code, s.event_no, s.report_form_no, s.serial_no
