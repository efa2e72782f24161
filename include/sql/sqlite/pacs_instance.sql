-- PACS instances (v_web_jcjg) created in [:since, :until), oldest first; streamed with fetchmany.
-- SQLite (the demo): timestamps are text; datetime() puts both sides in 'YYYY-MM-DD HH:MM:SS'.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:v_web_jcjg:v}}
FROM {{view:v_web_jcjg}} v
WHERE datetime(v."CREATEDTIME") >= datetime(:since)
  AND datetime(v."CREATEDTIME") < datetime(:until)
ORDER BY datetime(v."CREATEDTIME"), v."INSTANCESOPIUID"
