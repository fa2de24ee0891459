-- Fleet database schema version 6: device labels (docs/fleet.md, "Labels and selectors").
--
-- labels: what the device reported in its last heartbeat that carried them (agent.toml labels
-- and its facts under "mota/"), as a JSON object with sorted keys; operator_labels: what
-- `mota devices label` set, the same form. A device's labels are the two merged, the operator's
-- winning. Selectors are evaluated by the server (views, counts) and by the device (a targeted
-- rollout's channel file), so they are kept as text, not as SQL.
ALTER TABLE devices ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE devices ADD COLUMN operator_labels TEXT NOT NULL DEFAULT '{}';

-- A targeted rollout's label selector (canonical text; '' = every device): the rollout's devices
-- are those it matches by the labels they report (manager/fleet/rollout.hpp).
ALTER TABLE rollouts ADD COLUMN selector TEXT NOT NULL DEFAULT '';
-- The selector of the devices that ran previous_version when it was given to a target only (a
-- rollout to the same target after an earlier one); a halt gives it back to them alone.
ALTER TABLE rollouts ADD COLUMN previous_selector TEXT NOT NULL DEFAULT '';
