-- Fleet database schema version 3: device state that follows the latest facts (docs/fleet.md,
-- "Device state"; the writer's rules are in manager/fleet/fleet_ingest.cpp, apply_event()).

-- The version whose install the device last attempted and that failed before the switch (an
-- automatic rollback after the switch is rolled_back_from instead), '' when its last attempt did
-- not fail; failed_at: when that failure was received (Unix seconds, 0 = none). Kept apart from
-- `state` (the model's condition now), so that a device that is healthy again ("ok") still
-- counts as a failure of the version it could not install, until it installs something.
ALTER TABLE installed ADD COLUMN failed_version TEXT NOT NULL DEFAULT '';
ALTER TABLE installed ADD COLUMN failed_at INTEGER NOT NULL DEFAULT 0;
-- A device-level condition: the device's last TUF metadata refresh failed (expired, unreachable
-- server, bad signature), with the reason; since: when the first failure of the run was
-- reported (0 = none). Never a failure of a version.
ALTER TABLE devices ADD COLUMN metadata_error TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN metadata_error_since INTEGER NOT NULL DEFAULT 0;

-- Rows written by schema 2: a failure of a version the device does not run is a failed attempt.
UPDATE installed SET failed_version = target, failed_at = updated_at
  WHERE state = 'failed' AND target <> '' AND target <> version AND rolled_back_from <> target;

-- Small partial indexes, so `mota fleet` counts failures per version and devices with a metadata
-- error without a table scan (and `mota devices --condition metadata` lists them from it).
CREATE INDEX installed_failed_version ON installed (model, failed_version)
  WHERE failed_version <> '';
CREATE INDEX devices_metadata_error ON devices (id) WHERE metadata_error <> '';
-- Rollout counts (manager/fleet/rollout.cpp: model, channel -> device, version, failed_version,
-- failed_at, rolled_back_from) still never visit the table. Without updated_at, state and target
-- in it, an event that only moves updated_at or flips state rewrites no row of this index.
DROP INDEX installed_rollout;
CREATE INDEX installed_rollout ON installed
  (model, channel, device, version, failed_version, failed_at, rolled_back_from);
