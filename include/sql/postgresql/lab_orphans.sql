-- lab orphans: sub-items changed in [:since, :until) whose master does not exist at all.
-- Read once per window after the chunks, so a sub-item without a master is quarantined (rule
-- orphan_item) instead of never being seen.
-- PostgreSQL family (PostgreSQL, KingbaseES, openGauss): timestamp binds.
-- Bind parameters: :since, :until. The double-brace placeholders are filled by
-- hurren.extract.render_sql from checked configuration and the spec, nothing else.
SELECT {{columns:lab_subitem:s}}
FROM {{view:lab_subitem}} s
WHERE s.last_update_dtime >= CAST(:since AS timestamp)
  AND s.last_update_dtime < CAST(:until AS timestamp)
  AND NOT EXISTS (
    SELECT 1
    FROM {{view:labmaster}} m
    WHERE m.org_code = s.org_code
      AND m.event_no = s.event_no
      AND m.report_form_no = s.report_form_no
  )
ORDER BY s.org_code, s.event_no, s.report_form_no, s.serial_no
