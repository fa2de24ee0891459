-- Fleet database schema version 2: what `mota fleet` and rollout counts need to answer from a
-- few rows or covering indexes at 1,000,000 devices (bench/README.md, "Fleet"), with the same
-- results as before.

-- Devices per (model, version), kept by triggers on `installed` (the version only changes on an
-- install or a rollback, so heartbeats, which rewrite a row without changing its version, do not
-- touch it). Rows reaching 0 are deleted, so the table equals
-- SELECT model, version, COUNT(*) FROM installed GROUP BY model, version.
CREATE TABLE installed_counts (
  model   TEXT    NOT NULL,
  version TEXT    NOT NULL,
  devices INTEGER NOT NULL CHECK (devices >= 0),
  PRIMARY KEY (model, version)
) WITHOUT ROWID;
INSERT INTO installed_counts (model, version, devices)
  SELECT model, version, COUNT(*) FROM installed GROUP BY model, version;

CREATE TRIGGER installed_counts_insert AFTER INSERT ON installed
BEGIN
  INSERT INTO installed_counts (model, version, devices) VALUES (new.model, new.version, 1)
    ON CONFLICT (model, version) DO UPDATE SET devices = devices + 1;
END;

CREATE TRIGGER installed_counts_delete AFTER DELETE ON installed
BEGIN
  UPDATE installed_counts SET devices = devices - 1
    WHERE model = old.model AND version = old.version;
  DELETE FROM installed_counts WHERE model = old.model AND version = old.version AND devices = 0;
END;

CREATE TRIGGER installed_counts_update AFTER UPDATE OF model, version ON installed
  WHEN old.model IS NOT new.model OR old.version IS NOT new.version
BEGIN
  UPDATE installed_counts SET devices = devices - 1
    WHERE model = old.model AND version = old.version;
  DELETE FROM installed_counts WHERE model = old.model AND version = old.version AND devices = 0;
  INSERT INTO installed_counts (model, version, devices) VALUES (new.model, new.version, 1)
    ON CONFLICT (model, version) DO UPDATE SET devices = devices + 1;
END;

-- Covering indexes: failures per version read the partial index alone (a partial index whose
-- WHERE column is not in it is not covering), stale devices are found with their id from the
-- last_seen index, and rollout counts (manager/fleet/rollout.cpp: model, channel -> device, version,
-- state, target, rolled_back_from, updated_at) never visit the table.
DROP INDEX installed_failed;
CREATE INDEX installed_failed ON installed (model, target, state) WHERE state = 'failed';
DROP INDEX devices_last_seen;
CREATE INDEX devices_last_seen ON devices (last_seen, id);
CREATE INDEX installed_rollout ON installed
  (model, channel, device, version, state, target, rolled_back_from, updated_at);
