-- Fleet database schema version 4: what a device will not install, and why (docs/fleet.md,
-- "Device state").

-- The device's block list as its last heartbeat carried it (agent/report.hpp: "blocked"), a JSON
-- array of {"model", "version", "reason", "since"}; '' = never reported (agents before the list).
-- Written with the rest of the device row, which every accepted report rewrites anyway
-- (last_seen): a heartbeat that repeats the list costs nothing more, and no index holds it.
ALTER TABLE devices ADD COLUMN blocked TEXT NOT NULL DEFAULT '';

-- `mota fleet` counts the devices that refuse a model's wanted version (requirements not met,
-- version policy) from this small partial index, as installed_failed does for failures.
CREATE INDEX installed_refused ON installed (model) WHERE state = 'refused';
