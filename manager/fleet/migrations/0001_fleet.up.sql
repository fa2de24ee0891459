-- Fleet database of `mota serve` (DIR/fleet.db), schema version 1. Append-only: never edit an
-- applied migration, add a new numbered pair instead. Times are Unix seconds (UTC).

-- One row per device. key: Ed25519 public key (64 hex), learnt on first use (enrolled = 0) or
-- registered by `mota devices enroll` (enrolled = 1). last_seen: last accepted report.
CREATE TABLE devices (
  id            TEXT    PRIMARY KEY CHECK (id <> ''),
  key           TEXT    NOT NULL CHECK (length(key) = 64),
  enrolled      INTEGER NOT NULL DEFAULT 0 CHECK (enrolled IN (0, 1)),
  first_seen    INTEGER,
  last_seen     INTEGER,
  agent_version TEXT    NOT NULL DEFAULT '',
  arch          TEXT    NOT NULL DEFAULT '',
  tags          TEXT    NOT NULL DEFAULT '',
  last_seq      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_last_seen ON devices (last_seen);

-- What each device runs per model. version: the active version ('' = none). state: 'ok' (last
-- report was an install or an inventory), 'failed' or 'refused' (last event). target: the version
-- of the last install attempt. rolled_back_from: set when the version went down (a rollback).
-- channel: '' when the device never said (agents do not report it yet).
CREATE TABLE installed (
  device           TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
  model            TEXT    NOT NULL,
  version          TEXT    NOT NULL DEFAULT '',
  slot             TEXT    NOT NULL DEFAULT '',
  committed        INTEGER NOT NULL DEFAULT 0,
  state            TEXT    NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'failed', 'refused')),
  target           TEXT    NOT NULL DEFAULT '',
  last_error       TEXT    NOT NULL DEFAULT '',
  rolled_back_from TEXT    NOT NULL DEFAULT '',
  channel          TEXT    NOT NULL DEFAULT '',
  updated_at       INTEGER NOT NULL,
  PRIMARY KEY (device, model)
) WITHOUT ROWID;
CREATE INDEX installed_model_version ON installed (model, version);
-- Small partial indexes so `mota fleet` counts failures and rollbacks without a table scan.
CREATE INDEX installed_failed ON installed (model, target) WHERE state = 'failed';
CREATE INDEX installed_rolled_back ON installed (model, rolled_back_from)
  WHERE rolled_back_from <> '';

-- Every report item, once: (device, seq) is the agent's outbox sequence, so a batch sent again
-- is stored once. Event columns are copied out of the body for the views; body is the JSON.
CREATE TABLE events (
  device       TEXT    NOT NULL,
  seq          INTEGER NOT NULL,
  kind         TEXT    NOT NULL CHECK (kind IN ('event', 'heartbeat')),
  created_at   TEXT    NOT NULL,
  received_at  INTEGER NOT NULL,
  model        TEXT    NOT NULL DEFAULT '',
  from_version TEXT    NOT NULL DEFAULT '',
  to_version   TEXT    NOT NULL DEFAULT '',
  state        TEXT    NOT NULL DEFAULT '',
  step         TEXT    NOT NULL DEFAULT '',
  error        TEXT    NOT NULL DEFAULT '',
  body         TEXT    NOT NULL,
  PRIMARY KEY (device, seq)
) WITHOUT ROWID;

-- Releases seen by rollouts (the repository's targets are the source of truth).
CREATE TABLE releases (
  model      TEXT    NOT NULL,
  version    TEXT    NOT NULL,
  first_used INTEGER NOT NULL,
  PRIMARY KEY (model, version)
);

-- The last channel state a rollout published.
CREATE TABLE channels (
  channel    TEXT    NOT NULL,
  model      TEXT    NOT NULL,
  version    TEXT    NOT NULL,
  percent    INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 100),
  salt       TEXT    NOT NULL DEFAULT '',
  fallback   TEXT    NOT NULL DEFAULT '',
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (channel, model)
);

-- Guarded staged rollouts. percents: "5,25,100"; step: index into it. state: running, paused,
-- halted (automatic), aborted (operator), completed. max_failure_bp: the halt threshold in basis
-- points (500 = 5%). At most one active (running or paused) rollout per channel and model.
CREATE TABLE rollouts (
  id               INTEGER PRIMARY KEY,
  channel          TEXT    NOT NULL,
  model            TEXT    NOT NULL,
  version          TEXT    NOT NULL,
  previous_version TEXT    NOT NULL DEFAULT '',
  percents         TEXT    NOT NULL,
  step             INTEGER NOT NULL DEFAULT 0,
  max_failure_bp   INTEGER NOT NULL CHECK (max_failure_bp BETWEEN 0 AND 10000),
  min_devices      INTEGER NOT NULL CHECK (min_devices >= 0),
  step_after       INTEGER NOT NULL CHECK (step_after >= 0),
  salt             TEXT    NOT NULL DEFAULT '',
  state            TEXT    NOT NULL
                   CHECK (state IN ('running', 'paused', 'halted', 'aborted', 'completed')),
  started_at       INTEGER NOT NULL,
  step_started_at  INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX rollouts_active ON rollouts (channel, model)
  WHERE state IN ('running', 'paused');

-- Every rollout transition with its reason (shown by `mota rollout status`).
CREATE TABLE rollout_transitions (
  rollout_id INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
  at         INTEGER NOT NULL,
  state      TEXT    NOT NULL,
  step       INTEGER NOT NULL,
  percent    INTEGER NOT NULL,
  reason     TEXT    NOT NULL
);
CREATE INDEX rollout_transitions_id ON rollout_transitions (rollout_id, at);
