-- Fleet database schema version 7: paced, scheduled and windowed rollouts (docs/fleet.md, "Pacing and
-- schedule"; manager/fleet/rollout.hpp).
--
-- rate_per_min: at most this many more devices are given the version per minute (0: no pacing);
-- share_bp: the share of the sample published now, in basis points (NULL: the step's percentage,
-- as every rollout before this schema); paced_at: when the share last grew.
-- start_at: when a scheduled rollout begins; begun = 0 until then. Schema 1's CHECK on state
-- cannot be widened without rebuilding the table (and with it the foreign keys of its
-- transitions), so a scheduled rollout is stored as 'running' with begun = 0: the
-- one-active-rollout index covers it as it should.
ALTER TABLE rollouts ADD COLUMN rate_per_min INTEGER NOT NULL DEFAULT 0
  CHECK (rate_per_min BETWEEN 0 AND 100000);
ALTER TABLE rollouts ADD COLUMN share_bp INTEGER CHECK (share_bp BETWEEN 0 AND 10000);
ALTER TABLE rollouts ADD COLUMN paced_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN start_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN begun INTEGER NOT NULL DEFAULT 1 CHECK (begun IN (0, 1));
-- The rollout's install window (a JSON array of common/window.hpp texts; '[]': any time), carried
-- by every channel file it publishes.
ALTER TABLE rollouts ADD COLUMN install_window TEXT NOT NULL DEFAULT '[]';
