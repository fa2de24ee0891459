-- mota-agent state, schema version 2: blocking with judgement (agent/install.hpp, "Failure
-- classes"). Append-only: never edit an applied migration, add a new numbered pair instead.

-- Versions whose install failed in a way that may pass on retry (a latency budget missed on a
-- busy device, a probe that timed out, the runtime unavailable): how many such failures in a row,
-- the step and error of the last one, and when the next try may start (the backoff). The version
-- is blocked (blocklist) once failures exceeds [health] max_retries. Rows are deleted by a
-- successful install of the model, by blocking the version, and by `mota-agent unblock`. Kept in
-- the database so that a restart does not reset the count.
CREATE TABLE retries (
  model      TEXT    NOT NULL,
  version    TEXT    NOT NULL,
  failures   INTEGER NOT NULL CHECK (failures >= 1),
  step       TEXT    NOT NULL,
  last_error TEXT    NOT NULL,
  next_at    INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (model, version)
);
