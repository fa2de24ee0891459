-- Back to schema version 6: pacing and schedules are forgotten; a rollout that had not begun
-- is aborted (schema 6 would run it at once).
UPDATE rollouts SET state = 'aborted' WHERE begun = 0 AND state IN ('running', 'paused');
ALTER TABLE rollouts DROP COLUMN install_window;
ALTER TABLE rollouts DROP COLUMN begun;
ALTER TABLE rollouts DROP COLUMN start_at;
ALTER TABLE rollouts DROP COLUMN paced_at;
ALTER TABLE rollouts DROP COLUMN share_bp;
ALTER TABLE rollouts DROP COLUMN rate_per_min;
