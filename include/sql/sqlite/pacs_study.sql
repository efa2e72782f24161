-- PACS studies (v_web_jctj) last modified in [:since, :until), oldest first; streamed with fetchmany.
-- SQLite (the demo): timestamps are text; datetime() puts both sides in 'YYYY-MM-DD HH:MM:SS'.
-- Bind parameters: :since, :until. The double-brace placeholders (view, columns, study_uid) are
-- filled by hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:v_web_jctj:v}}
FROM {{view:v_web_jctj}} v
WHERE datetime(v."MODIFYTIME") >= datetime(:since)
  AND datetime(v."MODIFYTIME") < datetime(:until)
ORDER BY datetime(v."MODIFYTIME"), {{study_uid:v}}
