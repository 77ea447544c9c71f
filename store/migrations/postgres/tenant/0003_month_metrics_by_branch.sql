-- Reports read one branch (or the '*' total) over a range of months.
CREATE INDEX month_metrics_branch_month ON month_metrics (branch, month);
