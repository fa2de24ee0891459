-- Undoes 0001_initial.up.sql: the agent's state is gone afterwards (a fresh device).
DROP TABLE counters;
DROP INDEX outbox_kind_seq;
DROP TABLE outbox;
DROP TABLE tuf;
DROP TABLE blocklist;
DROP TABLE install_journal;
DROP TABLE active;
DROP TABLE slots;
