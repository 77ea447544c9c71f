use super::*;
use ledgersync_schemas::default_chart;

fn ctx() -> MapContext {
    MapContext {
        timezone: chrono_tz::Asia::Jakarta,
        currency: "IDR".into(),
        accounts: default_chart().into_iter().map(|a| a.code).collect(),
        retired: AccountCodes::default(),
    }
}

fn batch(header: &str, rows: &[&str]) -> RowBatch {
    let columns: Vec<String> = header.split(',').map(str::to_string).collect();
    let cells = rows
        .iter()
        .map(|r| r.split(',').map(str::to_string).collect())
        .collect();
    let lines = (2..2 + rows.len() as u64).collect();
    RowBatch::from_rows(&columns, cells, lines, Vec::new()).unwrap()
}

const POS: &str = r#"
name = "pos_sales"
key = ["sale_id"]
date = { column = "sold_at", source_timezone = "UTC" }
branch = "outlet"
numeric = ["net_amount", "tax"]

[lookups.payment_account]
cash = "1000"
qris = "1020"
gopay = "1020"

[lookups.sales_account]
pastry = "4000"
coffee = "4010"

[[templates]]
postings = [
  { account = { lookup = "payment_account", column = "payment_method" }, amount = "net_amount + tax" },
  { account = { lookup = "sales_account", column = "category" }, amount = "-net_amount" },
  { account = "2100", amount = "-tax" },
]
"#;

#[test]
fn pos_rows_become_balanced_postings_in_jakarta_dates() {
    let mapper = Mapper::compile(StreamDef::from_toml(POS).unwrap(), ctx()).unwrap();
    let mapped = mapper
        .map(batch(
            "sale_id,sold_at,outlet,category,payment_method,net_amount,tax",
            &[
                "S1,2025-01-31 17:30:00,Kemang,coffee,QRIS,45900.9,4590.09",
                "S2,2025-01-31 16:59:59,Kemang,pastry,cash,-755.0125,0",
            ],
        ))
        .unwrap();
    assert!(mapped.errors.is_empty(), "{:?}", mapped.errors);
    let s1: Vec<_> = mapped
        .postings
        .to_postings()
        .unwrap()
        .into_iter()
        .filter(|p| p.source_key == "S1")
        .collect();
    assert_eq!(s1.len(), 3);
    assert_eq!(s1[0].account, "1020");
    assert_eq!(s1[0].amount.to_string(), "50490.99");
    assert_eq!(s1[1].account, "4010");
    assert_eq!(s1[0].date.to_string(), "2025-02-01");
    assert_eq!(
        Amount::checked_sum(s1.iter().map(|p| p.amount)),
        Some(Amount::ZERO)
    );
    // a zero tax posts nothing; the fractional rupiah survive exactly
    let s2: Vec<_> = mapped
        .postings
        .to_postings()
        .unwrap()
        .into_iter()
        .filter(|p| p.source_key == "S2")
        .collect();
    assert_eq!(s2.len(), 2);
    assert_eq!(s2[1].amount.to_string(), "755.0125");
    assert_eq!(s2[0].date.to_string(), "2025-01-31");
}

#[test]
fn bad_rows_are_reported_with_line_and_reason() {
    let mapper = Mapper::compile(StreamDef::from_toml(POS).unwrap(), ctx()).unwrap();
    let mapped = mapper
        .map(batch(
            "sale_id,sold_at,outlet,category,payment_method,net_amount,tax",
            &[
                "S1,2025-01-31 17:30:00,Kemang,coffee,bitcoin,100,10",
                "S2,31/01/2025,Kemang,coffee,cash,100,10",
                "S3,2025-01-31 10:00:00,Kemang,coffee,cash,12abc,10",
                "S4,2025-01-31 10:00:00,Kemang,coffee,cash,1.000001,0",
                "S5,2025-01-31 10:00:00,Kemang,coffee,cash,100,10",
            ],
        ))
        .unwrap();
    let reasons: Vec<_> = mapped
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(reasons[0].0, 2);
    assert_eq!(
        reasons[0].1,
        "no account for 'bitcoin' in column 'payment_method' through lookup 'payment_account': \
         lookup 'payment_account' has cash, gopay, qris; add the value to \
         [lookups.payment_account] or give the posting a `default`"
    );
    assert!(
        reasons[1].1.starts_with("bad date '31/01/2025'"),
        "{}",
        reasons[1].1
    );
    assert!(
        reasons[2].1.contains("non-numeric amount '12abc'"),
        "{}",
        reasons[2].1
    );
    assert!(
        reasons[3].1.contains("more than 4 decimal places"),
        "{}",
        reasons[3].1
    );
    assert!(mapped
        .postings
        .to_postings()
        .unwrap()
        .iter()
        .all(|p| p.source_key == "S5"));
}

#[test]
fn templates_chosen_by_when_with_expressions() {
    let def = r#"
name = "financing"
key = ["id"]
date = { column = "date" }
numeric = ["amount", "fee"]

[[templates]]
when = "kind = 'capital'"
postings = [{ account = "1010", amount = "amount" }, { account = "3000", amount = "-amount" }]

[[templates]]
when = "kind = 'loan'"
postings = [
  { account = "1010", amount = "amount - fee" },
  { account = "8000", amount = "fee" },
  { account = "2500", amount = "-amount" },
]

[[templates]]
when = "kind = 'repayment'"
postings = [{ account = "2500", amount = "amount" }, { account = "1010", amount = "-(amount)" }]
"#;
    let mapper = Mapper::compile(StreamDef::from_toml(def).unwrap(), ctx()).unwrap();
    let mapped = mapper
        .map(batch(
            "id,date,kind,amount,fee",
            &[
                "F1,2024-01-05,capital,500000000,",
                "F2,2024-02-01,loan,200000000,1500000.5",
                "F3,2024-03-01,repayment,10000000,",
                "F4,2024-03-01,grant,1,",
            ],
        ))
        .unwrap();
    assert_eq!(mapped.errors.len(), 1);
    assert!(mapped.errors[0].reason.contains("no template"));
    let loan: Vec<_> = mapped
        .postings
        .to_postings()
        .unwrap()
        .into_iter()
        .filter(|p| p.source_key == "F2")
        .collect();
    assert_eq!(loan[0].amount.to_string(), "198499999.5");
    assert_eq!(loan.len(), 3);
    assert_eq!(
        mapped
            .postings
            .to_postings()
            .unwrap()
            .into_iter()
            .filter(|p| p.source_key == "F3")
            .count(),
        2
    );
}

#[test]
fn float_literals_are_refused_not_rounded() {
    let def = r#"
name = "taxed"
key = ["id"]
date = { column = "date" }
numeric = ["gross"]
[[templates]]
postings = [{ account = "1000", amount = "gross * 0.1" }, { account = "4000", amount = "-(gross * 0.1)" }]
"#;
    let mapper = Mapper::compile(StreamDef::from_toml(def).unwrap(), ctx()).unwrap();
    match mapper.map(batch("id,date,gross", &["A,2024-01-01,100"])) {
        Err(MappingError::InexactAmount { .. }) => {}
        other => {
            let mapped = other.unwrap();
            // If polars keeps decimals exact here, the value must be exact too.
            assert_eq!(
                mapped.postings.to_postings().unwrap()[0].amount.to_string(),
                "10"
            );
        }
    }
}

#[test]
fn missing_columns_and_broken_expressions_fail_early() {
    let mapper = Mapper::compile(StreamDef::journal(), ctx()).unwrap();
    let err = mapper
        .check_columns(&["date".into(), "txn_id".into(), "amount".into()])
        .unwrap_err();
    assert!(
        err.to_string().contains("missing column(s) account"),
        "{err}"
    );
    mapper
        .check_columns(&[
            "date".into(),
            "txn_id".into(),
            "account".into(),
            "amount".into(),
        ])
        .unwrap();

    let mut def = StreamDef::journal();
    def.templates[0].postings[0].amount = "amount +* 2".into();
    assert!(matches!(
        Mapper::compile(def, ctx()),
        Err(MappingError::Expression { .. })
    ));
}

#[test]
fn decimals_become_exact_ten_thousandths_or_are_refused() {
    // 1.2345 read at scale 8, a whole number at scale 0, a negative at scale 2.
    assert_eq!(exact_units(123_450_000, 8).unwrap().to_string(), "1.2345");
    assert_eq!(exact_units(5, 0).unwrap().units(), 50_000);
    assert_eq!(exact_units(-75_501, 2).unwrap().to_string(), "-755.01");
    // A fifth digit is refused, not rounded.
    assert!(exact_units(123_456_789, 8)
        .unwrap_err()
        .contains("1.23456789"));
    // Beyond 64 bits before scaling down: the 128-bit path.
    let wide = i128::from(i64::MAX) * 10_000;
    assert_eq!(exact_units(wide, 8).unwrap().units(), i64::MAX);
    // Beyond 64 bits after it: an overflow, worded by the ledger.
    assert!(exact_units(i128::from(i64::MAX) * 100_000, 4).is_err());
}

#[test]
fn postings_take_their_own_rows_values_when_other_rows_post_nothing() {
    // Two rows, two postings each; the first row's amounts are zero, so the batch has
    // as many postings as rows without one posting per row.
    let def = StreamDef::from_toml(
        r#"
name = "pairs"
key = ["id"]
date = { column = "day" }
branch = "outlet"
numeric = ["amount"]

[[templates]]
postings = [
  { account = "1000", amount = "amount" },
  { account = "4000", amount = "-amount" },
]
"#,
    )
    .unwrap();
    let mapper = Mapper::compile(def, ctx()).unwrap();
    let mapped = mapper
        .map(batch(
            "id,day,outlet,amount",
            &["A,2025-01-01,Kemang,0", "B,2025-01-02,Senopati,5"],
        ))
        .unwrap();
    assert!(mapped.errors.is_empty(), "{:?}", mapped.errors);
    let postings = mapped.postings.to_postings().unwrap();
    let seen: Vec<(&str, &str, &str, String)> = postings
        .iter()
        .map(|p| {
            (
                p.source_key.as_str(),
                p.branch.as_str(),
                p.account.as_str(),
                p.date.to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("B", "Senopati", "1000", "2025-01-02".to_string()),
            ("B", "Senopati", "4000", "2025-01-02".to_string()),
        ]
    );
    assert_eq!(postings[0].origin_line, 3);
}

/// A ninth decimal would be rounded away by reading at scale 8: the row is refused
/// with its value instead (`1.000000001` against `-1` would balance otherwise).
#[test]
fn digits_beyond_what_is_read_are_refused_not_rounded() {
    let mapper = Mapper::compile(StreamDef::from_toml(POS).unwrap(), ctx()).unwrap();
    let mapped = mapper
        .map(batch(
            "sale_id,sold_at,outlet,category,payment_method,net_amount,tax",
            &[
                "S1,2025-01-31 10:00:00,Kemang,coffee,cash,1.000000001,0",
                "S2,2025-01-31 10:00:00,Kemang,coffee,cash,100.000000000,1e-9",
                "S3,2025-01-31 10:00:00,Kemang,coffee,cash,100.00000000,0",
            ],
        ))
        .unwrap();
    let reasons: Vec<_> = mapped
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                2,
                "amount '1.000000001' in column 'net_amount' has more than 4 decimal places; round it in the source"
            ),
            (
                3,
                "amount '1e-9' in column 'tax' has more than 4 decimal places; round it in the source"
            ),
        ]
    );
    let postings = mapped.postings.to_postings().unwrap();
    assert!(postings.iter().all(|p| p.source_key == "S3"));
}

/// polars fails a whole batch on a decimal division by zero; each row whose
/// template divides by zero is refused on its own, naming the expression, and rows
/// of other templates map as usual.
#[test]
fn a_division_by_zero_refuses_its_row_only() {
    let def = StreamDef::from_toml(
        r#"
name = "split_bills"
key = ["bill"]
date = { column = "day" }
numeric = ["total", "guests", "tip"]

[[templates]]
when = "kind = 'split'"
postings = [
  { account = "1000", amount = "total / guests + tip / (guests - guests + 1)" },
  { account = "4000", amount = "-(total / guests + tip)" },
]

[[templates]]
postings = [
  { account = "1000", amount = "total" },
  { account = "4000", amount = "-total" },
]
"#,
    )
    .unwrap();
    let mapper = Mapper::compile(def, ctx()).unwrap();
    let mapped = mapper
        .map(batch(
            "bill,day,kind,total,guests,tip",
            &[
                "B1,2025-01-31,split,90,3,0",
                "B2,2025-01-31,split,90,0,0",
                "B3,2025-01-31,whole,90,0,0",
                "B4,2025-01-31,split,90,0,6",
                "B5,2025-01-31,split,100,4,0",
            ],
        ))
        .unwrap();
    let reasons: Vec<_> = mapped
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    let refused =
        "amount 'total / guests + tip / (guests - guests + 1)' divides by zero on this row";
    assert_eq!(reasons, [(3, refused), (5, refused)]);
    let postings = mapped.postings.to_postings().unwrap();
    let amounts: Vec<(&str, String)> = postings
        .iter()
        .map(|p| (p.source_key.as_str(), p.amount.to_string()))
        .collect();
    assert_eq!(
        amounts,
        [
            ("B1", "30".to_string()),
            ("B1", "-30".to_string()),
            ("B3", "90".to_string()),
            ("B3", "-90".to_string()),
            ("B5", "25".to_string()),
            ("B5", "-25".to_string()),
        ]
    );
}

/// A text column in an amount is refused when the mapping compiles, by name,
/// instead of polars' "sub operation not supported for dtypes `str` and `str`" on
/// the first batch; a text column compared in a condition is fine.
#[test]
fn an_amount_over_a_column_not_declared_numeric_names_it() {
    let stream = |numeric: &str, amount: &str| {
        StreamDef::from_toml(&format!(
            r#"
name = "fees"
key = ["id"]
date = {{ column = "day" }}
numeric = [{numeric}]
[[templates]]
postings = [{{ account = "1010", amount = "{amount}" }}, {{ account = "8000", amount = "-({amount})" }}]
"#
        ))
        .unwrap()
    };
    let error = Mapper::compile(stream(r#""gross""#, "gross - fee"), ctx())
        .err()
        .expect("fee is not numeric");
    assert_eq!(
        error.to_string(),
        "stream 'fees': templates[0].postings[0].amount 'gross - fee' uses column 'fee', which is \
         not declared numeric; add it to `numeric = [...]` so that its text is read as an exact decimal"
    );
    let error = Mapper::compile(stream(r#""gross""#, "COALESCE(fee, 0)"), ctx())
        .err()
        .expect("fee is not numeric");
    assert!(error.to_string().contains("column 'fee'"), "{error}");

    let mapper = Mapper::compile(
        stream(
            r#""gross", "fee""#,
            "CASE WHEN kind = 'card' THEN gross - fee ELSE gross END",
        ),
        ctx(),
    )
    .unwrap();
    let mapped = mapper
        .map(batch(
            "id,day,kind,gross,fee",
            &["F1,2025-01-02,card,100,2.5", "F2,2025-01-02,cash,50,1"],
        ))
        .unwrap();
    assert!(mapped.errors.is_empty(), "{:?}", mapped.errors);
    assert_eq!(mapped.postings.height(), 4);
}

#[test]
fn a_retired_account_is_refused_by_name_and_an_unknown_one_as_unknown() {
    let mut ctx = ctx();
    ctx.accounts.remove("1020");
    ctx.retired.insert("1020".to_string());
    ctx.accounts.remove("4000");
    let mapper = Mapper::compile(StreamDef::from_toml(POS).unwrap(), ctx).unwrap();
    let mapped = mapper
        .map(batch(
            "sale_id,sold_at,outlet,category,payment_method,net_amount,tax",
            &[
                "S1,2025-01-31 10:00:00,Kemang,coffee,qris,100,10",
                "S2,2025-01-31 10:00:00,Kemang,pastry,cash,100,10",
                "S3,2025-01-31 10:00:00,Kemang,coffee,cash,100,10",
            ],
        ))
        .unwrap();
    let reasons: Vec<_> = mapped
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                2,
                "account '1020' (from column 'payment_method' through lookup \
                 'payment_account') is retired from the chart; post to an account in use, or \
                 import the account again to bring it back"
            ),
            (
                3,
                "unknown account '4000' (from column 'category' through lookup 'sales_account')"
            ),
        ]
    );
    let keys: Vec<_> = mapped
        .postings
        .to_postings()
        .unwrap()
        .into_iter()
        .map(|p| p.source_key)
        .collect();
    assert_eq!(keys, ["S3", "S3", "S3"]);
}

/// Maps `texts`, and again with the `typed` columns in place of their text, as a
/// database read hands them over: the postings and row errors are the same.
fn maps_alike(mapper: &Mapper, texts: RowBatch, typed: Vec<Column>) -> (MappedBatch, MappedBatch) {
    let mut with_typed = texts.clone();
    for column in typed {
        with_typed.frame.with_column(column).unwrap();
    }
    let from_texts = mapper.map(texts).unwrap();
    let from_typed = mapper.map(with_typed).unwrap();
    assert_eq!(
        from_typed.postings.to_postings().unwrap(),
        from_texts.postings.to_postings().unwrap()
    );
    assert_eq!(from_typed.errors, from_texts.errors);
    (from_texts, from_typed)
}

/// A database read hands the date column over as instants: the postings are those
/// of the same rows as text, dates in Jakarta included (one of them past midnight
/// there, one a NULL refused by name).
#[test]
fn instants_map_as_their_text_does() {
    let mapper = Mapper::compile(StreamDef::from_toml(POS).unwrap(), ctx()).unwrap();
    let cursor = ["updated_at".to_string()];
    assert_eq!(mapper.instant_columns(&cursor), ["sold_at", "updated_at"]);
    // A cursor column the mapping reads stays text.
    let read = ["outlet".to_string(), "sold_at".to_string()];
    assert_eq!(mapper.instant_columns(&read), ["sold_at"]);
    let header = "sale_id,sold_at,outlet,category,payment_method,net_amount,tax";
    let rows = [
        "S1,2025-01-31T17:30:00Z,Kemang,coffee,QRIS,45900.9,4590.09",
        "S2,2025-01-31T16:59:59.25Z,Kemang,pastry,cash,-755.0125,0",
        "S3,2025-01-31T16:59:59.25Z,Dago,coffee,cash,1000,100",
        "S4,,Dago,coffee,cash,1000,100",
    ];
    let texts = batch(header, &rows);
    let instants: Int64Chunked = texts
        .frame
        .column("sold_at")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|text| {
            text.map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .unwrap()
                    .timestamp_micros()
            })
        })
        .collect();
    let instants = instants
        .with_name("sold_at".into())
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_column();
    let (from_texts, from_instants) = maps_alike(&mapper, texts, vec![instants]);
    let postings = |mapped: &MappedBatch| mapped.postings.to_postings().unwrap();
    assert_eq!(postings(&from_instants).len(), 8);
    assert_eq!(postings(&from_instants)[0].date.to_string(), "2025-02-01");
    assert_eq!(
        from_instants
            .postings
            .frame()
            .column("occurred_at")
            .unwrap(),
        from_texts.postings.frame().column("occurred_at").unwrap()
    );
    assert_eq!(from_instants.errors.len(), 1, "{:?}", from_instants.errors);
    assert!(from_instants.errors[0]
        .reason
        .contains("date column 'sold_at' is empty"));
}

/// A date column the mapping also reads otherwise stays text.
#[test]
fn a_date_column_read_otherwise_is_not_asked_for_as_instants() {
    let when = POS.replace(
        "[[templates]]\n",
        "[[templates]]\nwhen = \"sold_at >= '2025-01-01'\"\n",
    );
    let mapper = Mapper::compile(StreamDef::from_toml(&when).unwrap(), ctx()).unwrap();
    assert!(mapper.instant_columns(&[]).is_empty());
    let memo = POS.replace(
        "branch = \"outlet\"",
        "branch = \"outlet\"\nmemo = \"sold_at\"",
    );
    let mapper = Mapper::compile(StreamDef::from_toml(&memo).unwrap(), ctx()).unwrap();
    assert!(mapper.instant_columns(&[]).is_empty());
    let key = POS.replace("key = [\"sale_id\"]", "key = [\"sale_id\", \"sold_at\"]");
    let mapper = Mapper::compile(StreamDef::from_toml(&key).unwrap(), ctx()).unwrap();
    assert!(mapper.instant_columns(&[]).is_empty());
    let lookup = POS.replace("column = \"category\"", "column = \"sold_at\"");
    let mapper = Mapper::compile(StreamDef::from_toml(&lookup).unwrap(), ctx()).unwrap();
    assert!(mapper.instant_columns(&[]).is_empty());
    // An explicit format reads the text: the typed instant would skip it.
    let format = POS.replace(
        "source_timezone = \"UTC\" }",
        "source_timezone = \"UTC\", format = \"%Y-%m-%d %H:%M:%S\" }",
    );
    let mapper = Mapper::compile(StreamDef::from_toml(&format).unwrap(), ctx()).unwrap();
    assert!(mapper.instant_columns(&[]).is_empty());
}

/// A database read hands amount columns over as exact decimals: the postings are
/// those of the same rows as text; a numeric column the mapping also reads as text
/// is not asked for.
#[test]
fn typed_decimals_map_as_their_text_does() {
    let mapper = Mapper::compile(StreamDef::from_toml(POS).unwrap(), ctx()).unwrap();
    assert_eq!(mapper.decimal_columns(), ["net_amount", "tax"]);
    let header = "sale_id,sold_at,outlet,category,payment_method,net_amount,tax";
    let rows = [
        "S1,2025-01-31 17:30:00,Kemang,coffee,QRIS,45900.9,4590.09",
        "S2,2025-01-31 16:59:59,Kemang,pastry,cash,-755.0125,0",
        "S3,2025-01-31 16:59:59,Dago,coffee,cash,1000.00001,100",
        "S4,2025-01-31 16:59:59,Dago,coffee,cash,,100",
    ];
    let texts = batch(header, &rows);
    let mut typed = Vec::new();
    for column in ["net_amount", "tax"] {
        let text = texts.frame.column(column).unwrap().str().unwrap();
        let mantissas: Int128Chunked = text
            .iter()
            .map(|t| t.and_then(|t| decimals::parse(t.as_bytes(), SOURCE_PRECISION, SOURCE_SCALE)))
            .collect();
        typed.push(
            mantissas
                .with_name(column.into())
                .into_decimal_unchecked(SOURCE_PRECISION, SOURCE_SCALE)
                .into_column(),
        );
    }
    let (_, from_typed) = maps_alike(&mapper, texts, typed);
    assert_eq!(from_typed.postings.to_postings().unwrap().len(), 5);
    // 1000.00001 has a fifth decimal: refused on both paths, as is the empty amount.
    assert_eq!(from_typed.errors.len(), 2, "{:?}", from_typed.errors);

    let memo = POS.replace("branch = \"outlet\"", "branch = \"outlet\"\nmemo = \"tax\"");
    let mapper = Mapper::compile(StreamDef::from_toml(&memo).unwrap(), ctx()).unwrap();
    assert_eq!(mapper.decimal_columns(), ["net_amount"]);
}
