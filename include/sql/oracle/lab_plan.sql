-- lab plan: one row per (last_update_dtime, report_form_no) of the masters in [:since, :until), with its count, in extraction order; hurren.extract.plan_chunks cuts it into chunks.
-- Oracle: DATE comparisons with bound datetimes (CAST on the bind, never on the column, so an index on the column is used); no LIMIT: the caller streams with fetchmany.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT m.last_update_dtime, COALESCE(m.report_form_no, ' '), COUNT(*)
FROM {{view:labmaster}} m
WHERE m.last_update_dtime >= CAST(:since AS DATE)
  AND m.last_update_dtime < CAST(:until AS DATE)
GROUP BY m.last_update_dtime, COALESCE(m.report_form_no, ' ')
ORDER BY m.last_update_dtime, COALESCE(m.report_form_no, ' ')
