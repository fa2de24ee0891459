-- Undoes 0003_fleet_state.up.sql: failed attempts and metadata conditions are forgotten (schema 2
-- derives failures from state and target).
DROP INDEX installed_rollout;
CREATE INDEX installed_rollout ON installed
  (model, channel, device, version, state, target, rolled_back_from, updated_at);
DROP INDEX devices_metadata_error;
DROP INDEX installed_failed_version;
ALTER TABLE devices DROP COLUMN metadata_error_since;
ALTER TABLE devices DROP COLUMN metadata_error;
ALTER TABLE installed DROP COLUMN failed_at;
ALTER TABLE installed DROP COLUMN failed_version;
