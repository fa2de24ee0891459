-- Undoes 0001_fleet.up.sql: the fleet history is gone afterwards.
DROP TABLE rollout_transitions;
DROP TABLE rollouts;
DROP TABLE channels;
DROP TABLE releases;
DROP TABLE events;
DROP TABLE installed;
DROP TABLE devices;
