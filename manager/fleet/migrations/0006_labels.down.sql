-- Back to schema version 5: labels are forgotten.
ALTER TABLE devices DROP COLUMN operator_labels;
ALTER TABLE devices DROP COLUMN labels;
