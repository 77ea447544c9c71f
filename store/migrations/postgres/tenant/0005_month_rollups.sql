-- One row per (month, branch) with all its metrics as a JSON object of
-- "metric:key" -> amount (ten-thousandths), so a report reads a row per month.
CREATE TABLE month_rollups (
    month   TEXT NOT NULL,
    branch  TEXT NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (branch, month)
);
INSERT INTO month_rollups (month, branch, metrics)
SELECT month, branch, json_object_agg(metric || ':' || key, amount)::text
FROM month_metrics GROUP BY month, branch;
