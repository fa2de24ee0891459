-- Fleet database schema version 5: device admission (docs/security.md, "Devices").
--
-- A device is 'admitted' (its reports count: fleet statistics, rollout decisions), 'pending'
-- (first contact under `mota serve --admission pending`: its reports are stored and shown, but
-- count for nothing until `mota devices accept`) or 'rejected' (`mota devices reject`: its key
-- stays on record so nobody else can take the id, and its reports are refused).
-- Devices already on record were trusted under the rules before admission existed: admitted.
ALTER TABLE devices ADD COLUMN admission TEXT NOT NULL DEFAULT 'admitted'
  CHECK (admission IN ('admitted', 'pending', 'rejected'));
-- Who admitted it: 'operator' (mota devices accept), 'enrolled' (mota devices enroll),
-- 'automatic' (--admission automatic), 'enrollment:NAME' (an enrollment key's signature), '' =
-- before admission existed, or not admitted.
ALTER TABLE devices ADD COLUMN admitted_by TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN admitted_at INTEGER NOT NULL DEFAULT 0;
-- The address the device first reported from (for an operator reviewing pending devices).
ALTER TABLE devices ADD COLUMN first_remote TEXT NOT NULL DEFAULT '';

-- Pending and rejected devices are few (bounded by `--max-pending`): the statistics and rollout
-- decisions leave them out through this small partial index instead of a look-up per row.
CREATE INDEX devices_unadmitted ON devices (admission, id) WHERE admission <> 'admitted';

-- Fleet enrollment keys: an image carries the private half; a device that presents the key's
-- signature over its id and device key is admitted on first contact. Revoked keys
-- (revoked_at > 0) admit nobody new; devices they admitted stay admitted.
CREATE TABLE enrollment_keys (
  name       TEXT    PRIMARY KEY CHECK (name <> ''),
  key        TEXT    NOT NULL UNIQUE CHECK (length(key) = 64),
  created_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL DEFAULT 0
);

-- installed_counts (migration 0002) counts admitted devices only: the triggers ask the device's
-- admission, and a change of admission moves the device's rows in or out of the counts.
DROP TRIGGER installed_counts_insert;
DROP TRIGGER installed_counts_delete;
DROP TRIGGER installed_counts_update;

CREATE TRIGGER installed_counts_insert AFTER INSERT ON installed
  WHEN (SELECT admission FROM devices WHERE id = new.device) IS 'admitted'
BEGIN
  INSERT INTO installed_counts (model, version, devices) VALUES (new.model, new.version, 1)
    ON CONFLICT (model, version) DO UPDATE SET devices = devices + 1;
END;

CREATE TRIGGER installed_counts_delete AFTER DELETE ON installed
  WHEN (SELECT admission FROM devices WHERE id = old.device) IS 'admitted'
BEGIN
  UPDATE installed_counts SET devices = devices - 1
    WHERE model = old.model AND version = old.version;
  DELETE FROM installed_counts WHERE model = old.model AND version = old.version AND devices = 0;
END;

CREATE TRIGGER installed_counts_update AFTER UPDATE OF model, version ON installed
  WHEN (old.model IS NOT new.model OR old.version IS NOT new.version)
   AND (SELECT admission FROM devices WHERE id = new.device) IS 'admitted'
BEGIN
  UPDATE installed_counts SET devices = devices - 1
    WHERE model = old.model AND version = old.version;
  DELETE FROM installed_counts WHERE model = old.model AND version = old.version AND devices = 0;
  INSERT INTO installed_counts (model, version, devices) VALUES (new.model, new.version, 1)
    ON CONFLICT (model, version) DO UPDATE SET devices = devices + 1;
END;

CREATE TRIGGER devices_admitted AFTER UPDATE OF admission ON devices
  WHEN old.admission IS NOT 'admitted' AND new.admission = 'admitted'
BEGIN
  INSERT INTO installed_counts (model, version, devices)
    SELECT model, version, 1 FROM installed WHERE device = new.id
    ON CONFLICT (model, version) DO UPDATE SET devices = devices + 1;
END;

CREATE TRIGGER devices_unadmitted AFTER UPDATE OF admission ON devices
  WHEN old.admission = 'admitted' AND new.admission IS NOT 'admitted'
BEGIN
  UPDATE installed_counts SET devices = devices - 1
    WHERE (model, version) IN (SELECT model, version FROM installed WHERE device = new.id);
  DELETE FROM installed_counts WHERE devices = 0;
END;

-- A device removed while admitted takes its rows out of the counts before they cascade away (the
-- cascade's own delete trigger finds no device then, and counts nothing).
CREATE TRIGGER devices_deleted BEFORE DELETE ON devices WHEN old.admission = 'admitted'
BEGIN
  UPDATE installed_counts SET devices = devices - 1
    WHERE (model, version) IN (SELECT model, version FROM installed WHERE device = old.id);
  DELETE FROM installed_counts WHERE devices = 0;
END;
