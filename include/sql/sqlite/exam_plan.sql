-- exam plan: one row per (last_update_dtime, report_form_no) of the masters in [:since, :until), with its count, in extraction order; hurren.extract.plan_chunks cuts it into chunks.
-- SQLite (the demo): timestamps are text; datetime() puts both sides in 'YYYY-MM-DD HH:MM:SS'.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT datetime(m.last_update_dtime), COALESCE(m.report_form_no, ' '), COUNT(*)
FROM {{view:exammaster}} m
WHERE datetime(m.last_update_dtime) >= datetime(:since)
  AND datetime(m.last_update_dtime) < datetime(:until)
GROUP BY datetime(m.last_update_dtime), COALESCE(m.report_form_no, ' ')
ORDER BY datetime(m.last_update_dtime), COALESCE(m.report_form_no, ' ')
