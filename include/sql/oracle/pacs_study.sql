-- PACS studies (v_web_jctj) last modified in [:since, :until), oldest first; streamed with fetchmany.
-- Oracle: DATE comparisons with bound datetimes (CAST on the bind, never on the column, so an index on the column is used); no LIMIT: the caller streams with fetchmany.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:v_web_jctj:v}}
FROM {{view:v_web_jctj}} v
WHERE v."MODIFYTIME" >= CAST(:since AS DATE)
  AND v."MODIFYTIME" < CAST(:until AS DATE)
ORDER BY v."MODIFYTIME", {{study_uid:v}}
