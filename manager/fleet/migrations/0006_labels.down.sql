-- Back to schema version 5: labels are forgotten.
ALTER TABLE rollouts DROP COLUMN previous_selector;
ALTER TABLE rollouts DROP COLUMN selector;
ALTER TABLE devices DROP COLUMN operator_labels;
ALTER TABLE devices DROP COLUMN labels;
