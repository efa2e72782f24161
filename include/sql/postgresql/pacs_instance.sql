-- PACS instances (v_web_jcjg) created in [:since, :until), oldest first; streamed with fetchmany.
-- PostgreSQL family (PostgreSQL, KingbaseES, openGauss): timestamp binds.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:v_web_jcjg:v}}
FROM {{view:v_web_jcjg}} v
WHERE v."CREATEDTIME" >= CAST(:since AS timestamp)
  AND v."CREATEDTIME" < CAST(:until AS timestamp)
ORDER BY v."CREATEDTIME", v."INSTANCESOPIUID"
