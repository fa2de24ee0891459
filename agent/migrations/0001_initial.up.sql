-- mota-agent state, schema version 1. Append-only: never edit an applied migration, add a new
-- numbered pair instead. Times are Unix seconds (UTC).

-- The two A/B slots of each model and what they hold.
CREATE TABLE slots (
  model       TEXT    NOT NULL,
  slot        TEXT    NOT NULL CHECK (slot IN ('a', 'b')),
  version     TEXT    NOT NULL DEFAULT '',
  tree_digest TEXT    NOT NULL DEFAULT '',
  status      TEXT    NOT NULL CHECK (status IN ('empty', 'writing', 'valid', 'bad')),
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (model, slot)
);

-- Which slot each model runs from; committed = 0 while a switch is on trial.
CREATE TABLE active (
  model      TEXT    PRIMARY KEY,
  slot       TEXT    NOT NULL CHECK (slot IN ('a', 'b')),
  committed  INTEGER NOT NULL CHECK (committed IN (0, 1)),
  updated_at INTEGER NOT NULL
);

-- The install state machine's persisted state: one row per model with an install in progress.
CREATE TABLE install_journal (
  model            TEXT    PRIMARY KEY,
  install_id       TEXT    NOT NULL UNIQUE CHECK (install_id <> ''),
  from_version     TEXT    NOT NULL DEFAULT '',
  to_version       TEXT    NOT NULL CHECK (to_version <> ''),
  target_slot      TEXT    NOT NULL CHECK (target_slot IN ('a', 'b')),
  step             TEXT    NOT NULL CHECK (step <> ''),
  attempts         INTEGER NOT NULL DEFAULT 1 CHECK (attempts >= 0),
  started_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  bytes_downloaded INTEGER NOT NULL DEFAULT 0 CHECK (bytes_downloaded >= 0),
  used_delta       INTEGER NOT NULL DEFAULT 0 CHECK (used_delta IN (0, 1)),
  last_error       TEXT    NOT NULL DEFAULT ''
);

-- Versions this device rolled back and must not install again.
CREATE TABLE blocklist (
  model      TEXT    NOT NULL,
  version    TEXT    NOT NULL,
  reason     TEXT    NOT NULL,
  blocked_at INTEGER NOT NULL,
  PRIMARY KEY (model, version)
);

-- Trusted TUF metadata versions, for status and reports (the metadata itself lives in files).
CREATE TABLE tuf (
  role       TEXT    PRIMARY KEY,
  version    INTEGER NOT NULL CHECK (version >= 0),
  updated_at INTEGER NOT NULL
);

-- Reports waiting to be sent, in seq order.
CREATE TABLE outbox (
  seq        INTEGER PRIMARY KEY,
  kind       TEXT    NOT NULL CHECK (kind IN ('event', 'heartbeat')),
  body       TEXT    NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX outbox_kind_seq ON outbox (kind, seq);

-- Monotonic counters that survive deletes (outbox_seq: the last seq handed out).
CREATE TABLE counters (
  name  TEXT    PRIMARY KEY,
  value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('outbox_seq', 0);
