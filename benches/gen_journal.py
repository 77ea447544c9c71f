"""Writes a general-ledger export for the journal stream: N lines over 24 months and
50 outlets, mostly two-line sales (cash / QRIS / card against food or beverage sales)
and three-line purchases and payroll, amounts with fractional rupiah."""
import random
import sys

lines = int(sys.argv[1])
path = sys.argv[2]
rng = random.Random(42)
branches = [f"Outlet {i:02d}" for i in range(50)]
months = [(2024 + m // 12, m % 12 + 1) for m in range(24)]
written = 0
txn = 0
with open(path, "w") as out:
    out.write("date,txn_id,account,amount,branch,memo\n")
    while written < lines:
        txn += 1
        year, month = months[txn % 24]
        date = f"{year:04d}-{month:02d}-{rng.randint(1, 28):02d}"
        branch = branches[txn % 50]
        kind = rng.random()
        if kind < 0.8 or lines - written < 3:
            amount = f"{rng.randint(20_000, 2_000_000)}.{rng.choice(['0', '5', '9', '0125'])}"
            cash = rng.choice(["1000", "1010", "1020", "1030"])
            sales = rng.choice(["4000", "4010"])
            rows = [(cash, amount), (sales, "-" + amount)]
        elif kind < 0.9:
            food, bev = rng.randint(100_000, 5_000_000), rng.randint(100_000, 3_000_000)
            rows = [("5000", str(food)), ("5010", str(bev)), ("2000", str(-(food + bev)))]
        else:
            wage, tax = rng.randint(3_000_000, 9_000_000), rng.randint(100_000, 400_000)
            rows = [("6000", str(wage)), ("6010", str(tax)), ("1010", str(-(wage + tax)))]
        for account, amount in rows:
            out.write(f"{date},T{txn:09d},{account},{amount},{branch},bench\n")
        written += len(rows)
