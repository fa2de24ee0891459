-- Back to schema version 7: field health and the rollouts' field gates are forgotten.
ALTER TABLE rollouts DROP COLUMN min_inferences;
ALTER TABLE rollouts DROP COLUMN max_latency_regression;
ALTER TABLE rollouts DROP COLUMN max_error_bp;
DROP INDEX field_health_version;
DROP TABLE field_health;
