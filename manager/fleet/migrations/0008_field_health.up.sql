-- Fleet database schema version 8: field health (docs/fleet.md, "Field health").
--
-- Per device, model and version: what mota-runtime counted while serving it, from heartbeats
-- (agent/report.hpp "field"). A heartbeat carries the running totals of one runtime load
-- ("load": runtime instance/generation); the last totals are kept (last_*) so the next
-- heartbeat adds only the difference, and a new load (or counts that went down) adds its totals
-- whole. inferences, errors and latency are the sums over every load. Histograms are
-- common/latency_histogram.hpp's sparse form as JSON ([[bucket, count], ...]).
CREATE TABLE field_health (
  device          TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  model           TEXT    NOT NULL,
  version         TEXT    NOT NULL,
  load            TEXT    NOT NULL DEFAULT '',
  last_inferences INTEGER NOT NULL DEFAULT 0,
  last_errors     INTEGER NOT NULL DEFAULT 0,
  last_latency    TEXT    NOT NULL DEFAULT '[]',
  inferences      INTEGER NOT NULL DEFAULT 0,
  errors          INTEGER NOT NULL DEFAULT 0,
  latency         TEXT    NOT NULL DEFAULT '[]',
  updated_at      INTEGER NOT NULL,
  PRIMARY KEY (device, model, version)
) WITHOUT ROWID;
CREATE INDEX field_health_version ON field_health (model, version);

-- A rollout's field gates (manager/fleet/rollout.hpp): halt when the version's error rate in the
-- field is above max_error_bp (basis points), or its p99 latency is more than
-- max_latency_regression percent above the previous version's on the same devices; NULL: no
-- such gate. Either judges only once min_inferences runs were counted.
ALTER TABLE rollouts ADD COLUMN max_error_bp INTEGER CHECK (max_error_bp BETWEEN 0 AND 10000);
ALTER TABLE rollouts ADD COLUMN max_latency_regression INTEGER
  CHECK (max_latency_regression BETWEEN 0 AND 100000);
ALTER TABLE rollouts ADD COLUMN min_inferences INTEGER NOT NULL DEFAULT 1000
  CHECK (min_inferences >= 0);
