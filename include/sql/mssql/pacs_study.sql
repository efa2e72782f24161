-- PACS studies (v_web_jctj) last modified in [:since, :until), oldest first; streamed with fetchmany.
-- SQL Server: datetime2 binds.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:v_web_jctj:v}}
FROM {{view:v_web_jctj}} v
WHERE v.[MODIFYTIME] >= CAST(:since AS datetime2)
  AND v.[MODIFYTIME] < CAST(:until AS datetime2)
ORDER BY v.[MODIFYTIME], {{study_uid:v}}
