-- Back to schema version 4: every device counts again (admission is forgotten).
DROP TRIGGER devices_deleted;
DROP TRIGGER devices_unadmitted;
DROP TRIGGER devices_admitted;
DROP TRIGGER installed_counts_update;
DROP TRIGGER installed_counts_delete;
DROP TRIGGER installed_counts_insert;

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

DELETE FROM installed_counts;
INSERT INTO installed_counts (model, version, devices)
  SELECT model, version, COUNT(*) FROM installed GROUP BY model, version;

DROP TABLE enrollment_keys;
DROP INDEX devices_unadmitted;
ALTER TABLE devices DROP COLUMN first_remote;
ALTER TABLE devices DROP COLUMN admitted_at;
ALTER TABLE devices DROP COLUMN admitted_by;
ALTER TABLE devices DROP COLUMN admission;
