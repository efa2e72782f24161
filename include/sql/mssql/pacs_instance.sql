-- PACS instances (v_web_jcjg) created in [:since, :until), oldest first; streamed with fetchmany.
-- SQL Server: datetime2 binds.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:v_web_jcjg:v}}
FROM {{view:v_web_jcjg}} v
WHERE v.[CREATEDTIME] >= CAST(:since AS datetime2)
  AND v.[CREATEDTIME] < CAST(:until AS datetime2)
ORDER BY v.[CREATEDTIME], v.[INSTANCESOPIUID]
