//! Against the local PostgreSQL 15 (127.0.0.1:5432, user postgres, trust auth):
//! each test creates its own database and drops it at the end.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use ledgersync_config::{ConnectorSpec, CursorSpec, DatabaseKind, DatabaseStream, TlsMode};
use secrecy::SecretString;

use crate::source::SourceIdentity;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use super::*;
use crate::source::CanonicalType;

const PASSWORD: &str = "pw-never-shown-7Qx";

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn superuser(database: &str) -> PgConnection {
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(5432)
        .username("postgres")
        .database(database);
    PgConnection::connect_with(&options).await.unwrap()
}

/// Runs `body` with the name of a fresh database set up by `setup`, then drops
/// the database (and `roles`), also when `body` panics.
async fn with_database<F, Fut>(setup: &str, roles: &[&str], body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = unique("ls_pg");
    let mut admin = superuser("postgres").await;
    admin
        .execute(format!("CREATE DATABASE {}", quote_ident(&name)).as_str())
        .await
        .unwrap();
    let mut connection = superuser(&name).await;
    let setup_result = sqlx::raw_sql(setup).execute(&mut connection).await;
    connection.close().await.unwrap();
    let result = match setup_result {
        Ok(_) => tokio::spawn(body(name.clone()))
            .await
            .map_err(|e| e.into_panic()),
        Err(error) => {
            Err(Box::new(format!("setup failed: {error}")) as Box<dyn std::any::Any + Send>)
        }
    };
    admin
        .execute(format!("DROP DATABASE {} WITH (FORCE)", quote_ident(&name)).as_str())
        .await
        .unwrap();
    for role in roles {
        admin
            .execute(format!("DROP ROLE IF EXISTS {}", quote_ident(role)).as_str())
            .await
            .unwrap();
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Statement by statement: inside a spawned test body the compiler cannot show
/// that `raw_sql(..).execute(&mut connection)` is `Send` for every lifetime.
async fn run_sql(database: &str, statements: &[&str]) {
    let mut connection = superuser(database).await;
    for statement in statements {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap();
    }
    connection.close().await.unwrap();
}

fn spec(database: &str, user: &str, port: u16) -> ConnectorSpec {
    ConnectorSpec {
        kind: DatabaseKind::Postgres,
        host: "127.0.0.1".into(),
        port: Some(port),
        database: database.into(),
        user: user.into(),
        tls: TlsMode::Prefer,
        ca_file: None,
        source_timezone: None,
        schedule: None,
        statement_timeout_secs: 30,
        streams: Vec::new(),
    }
}

fn database(name: &str) -> PostgresDatabase {
    PostgresDatabase::new(&spec(name, "postgres", 5432), SecretString::from(PASSWORD)).unwrap()
}

fn table(name: &str, table: &str, cursor: Option<(&str, Option<&str>)>) -> DatabaseStream {
    DatabaseStream {
        name: name.into(),
        table: Some(table.into()),
        query: None,
        mapping: "unused.toml".into(),
        cursor: cursor.map(|(column, lookback)| CursorSpec {
            column: column.into(),
            lookback: lookback.map(str::to_owned),
            reconcile: None,
        }),
    }
}

fn query(name: &str, sql: &str) -> DatabaseStream {
    DatabaseStream {
        query: Some(sql.into()),
        table: None,
        ..table(name, "", None)
    }
}

fn request(key: &[&str], cursor: Option<&str>, batch_rows: usize) -> ReadRequest {
    ReadRequest {
        identity: SourceIdentity {
            tenant: "t".into(),
            connector: "pos".into(),
            stream: "pos_sales".into(),
        },
        key: key.iter().map(|k| k.to_string()).collect(),
        cursor: cursor.map(str::to_owned),
        batch_rows,
        columns: None,
        instant_columns: Vec::new(),
        decimal_columns: Vec::new(),
    }
}

async fn read_all(source: &mut dyn Source) -> Result<Vec<SourceBatch>, SourceError> {
    let mut batches = Vec::new();
    while let Some(batch) = source.next_batch().await? {
        batches.push(batch);
    }
    Ok(batches)
}

async fn open_error(db: &PostgresDatabase, stream: &DatabaseStream, key: &[&str]) -> SourceError {
    match db.open(stream, request(key, None, 100)).await {
        Ok(mut source) => read_all(source.as_mut())
            .await
            .expect_err("the read should fail"),
        Err(error) => error,
    }
}

fn texts(batches: &[SourceBatch], column: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let values = b.rows.frame.column(column).unwrap().str().unwrap().clone();
            (0..values.len())
                .map(|i| values.get(i).map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

fn assert_no_password(error: &SourceError) {
    assert!(!error.to_string().contains(PASSWORD), "{error}");
    assert!(!format!("{error:?}").contains(PASSWORD), "{error:?}");
}

const SALES: &str = r#"
CREATE TABLE sales (
    sale_id text PRIMARY KEY,
    amount numeric(18,4),
    big numeric(40,10),
    price money,
    sold_at timestamptz,
    local_at timestamp,
    day date,
    note text,
    paid boolean,
    seq int8,
    qty int4
);
INSERT INTO sales VALUES
 ('S1', -755.0125, 12345678901234567890.1234567890, '1234.56', '2024-03-01 10:15:30.5+07',
  '2024-03-01 10:15:30', '2024-02-29', 'café 日本', true, 9223372036854775806, -7),
 ('S2', 10.5, 0.0000000001, '-0.01', '1999-12-31 23:59:59.999999+00', '2000-01-01 00:00:00.000001',
  '0001-01-01', '', false, -9223372036854775808, 0),
 ('S3', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

#[tokio::test(flavor = "multi_thread")]
async fn values_are_read_as_exact_canonical_texts() {
    with_database(SALES, &[], |name| async move {
        let db = database(&name);
        let stream = table("pos_sales", "public.sales", None);
        let mut source = db
            .open(&stream, request(&["sale_id"], None, 100))
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(batches.len(), 1);
        let mut by_key: Vec<usize> = (0..3).collect();
        let keys = texts(&batches, "sale_id");
        by_key.sort_by_key(|&i| keys[i].clone());
        let column = |name: &str| {
            let values = texts(&batches, name);
            by_key
                .iter()
                .map(|&i| values[i].clone())
                .collect::<Vec<_>>()
        };
        let with_null = |values: &[&str]| {
            let mut v = some(values);
            v.push(None);
            v
        };
        assert_eq!(column("amount"), with_null(&["-755.0125", "10.5000"]));
        assert_eq!(
            column("big"),
            with_null(&["12345678901234567890.1234567890", "0.0000000001"])
        );
        // money is read as money::numeric: lc_monetary's own scale (C: 2).
        assert_eq!(column("price"), with_null(&["1234.56", "-0.01"]));
        assert_eq!(
            column("sold_at"),
            with_null(&["2024-03-01T03:15:30.500000Z", "1999-12-31T23:59:59.999999Z"])
        );
        assert_eq!(
            column("local_at"),
            with_null(&["2024-03-01 10:15:30", "2000-01-01 00:00:00.000001"])
        );
        assert_eq!(column("day"), with_null(&["2024-02-29", "0001-01-01"]));
        assert_eq!(column("note"), with_null(&["café 日本", ""]));
        assert_eq!(column("paid"), with_null(&["true", "false"]));
        assert_eq!(
            column("seq"),
            with_null(&["9223372036854775806", "-9223372036854775808"])
        );
        assert_eq!(column("qty"), with_null(&["-7", "0"]));
        assert!(source.is_complete_read());
        assert_eq!(source.cursor(), None);
        let RowOrigin::Relation {
            relation,
            key_columns,
            ..
        } = &batches[0].origin
        else {
            panic!("rows of a table have a relation origin")
        };
        assert_eq!(relation, "public.sales");
        assert_eq!(key_columns, &["sale_id".to_string()]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn naive_times_are_placed_in_the_source_timezone() {
    let setup = "CREATE TABLE shifts (id int4 PRIMARY KEY, at timestamp);
                 INSERT INTO shifts VALUES (1, '2024-03-01 10:15:30'), (2, '2024-03-31 02:30:00');";
    with_database(setup, &[], |name| async move {
        let mut spec = spec(&name, "postgres", 5432);
        spec.source_timezone = Some("Asia/Jakarta".into());
        let db = PostgresDatabase::new(&spec, SecretString::from(PASSWORD)).unwrap();
        let stream = query("shifts", "SELECT * FROM shifts WHERE id = 1");
        let mut source = db.open(&stream, request(&["id"], None, 10)).await.unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "at"), some(&["2024-03-01T03:15:30Z"]));

        // 02:30 on 2024-03-31 does not exist in Berlin (clocks jump 02:00 → 03:00).
        spec.source_timezone = Some("Europe/Berlin".into());
        let db = PostgresDatabase::new(&spec, SecretString::from(PASSWORD)).unwrap();
        let error = open_error(&db, &table("shifts", "shifts", None), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Type, "{error}");
        let message = error.to_string();
        for part in [
            "shifts",
            "'at'",
            "id=2",
            "2024-03-31 02:30:00",
            "Europe/Berlin",
        ] {
            assert!(message.contains(part), "{part} in {message}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_reads_resume_from_the_committed_cursor_minus_the_look_back() {
    let setup =
        "CREATE TABLE orders (id int4 PRIMARY KEY, updated_at timestamptz, amount numeric(10,2));
                 INSERT INTO orders VALUES
                   (1, '2024-05-01 09:00:00+00', 1.00),
                   (2, '2024-05-01 11:55:00+00', 2.00),
                   (3, '2024-05-01 12:00:00+00', 3.00);";
    with_database(setup, &[], |name| async move {
        let db = database(&name);
        let stream = table("orders", "orders", Some(("updated_at", Some("10m"))));
        let mut source = db.open(&stream, request(&["id"], None, 100)).await.unwrap();
        let first = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&first, "id"), some(&["1", "2", "3"]));
        assert!(!source.is_complete_read());
        let committed = source.cursor().unwrap();
        assert_eq!(committed, "2024-05-01T12:00:00Z");
        drop(source);

        run_sql(
            &name,
            &[
                "INSERT INTO orders VALUES (4, '2024-05-01 13:00:00+00', 4.00)",
                "UPDATE orders SET updated_at = '2024-05-01 14:00:00+00', amount = 1.50 WHERE id = 1",
            ],
        )
        .await;

        let mut source = db
            .open(&stream, request(&["id"], Some(&committed), 100))
            .await
            .unwrap();
        let second = read_all(source.as_mut()).await.unwrap();
        // 2 and 3 again (within 10 minutes of the cursor), then 4 and the updated 1.
        assert_eq!(texts(&second, "id"), some(&["2", "3", "4", "1"]));
        assert_eq!(texts(&second, "amount"), some(&["2.00", "3.00", "4.00", "1.50"]));
        assert_eq!(source.cursor().as_deref(), Some("2024-05-01T14:00:00Z"));

        // Nothing new: the committed cursor stays.
        let later = "2024-06-01T00:00:00Z";
        let mut source = db
            .open(&stream, request(&["id"], Some(later), 100))
            .await
            .unwrap();
        assert!(read_all(source.as_mut()).await.unwrap().is_empty());
        assert_eq!(source.cursor().as_deref(), Some(later));

        // An integer cursor steps back by a count.
        let by_id = table("orders", "orders", Some(("id", Some("1"))));
        let mut source = db
            .open(&by_id, request(&["id"], Some("3"), 100))
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "id"), some(&["2", "3", "4"]));
        assert_eq!(source.cursor().as_deref(), Some("4"));

        // A duration look-back on an integer cursor is a definition to fix.
        let wrong = table("orders", "orders", Some(("id", Some("10m"))));
        let error = open_error_with_cursor(&db, &wrong, "3").await;
        assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
    })
    .await;
}

async fn open_error_with_cursor(
    db: &PostgresDatabase,
    stream: &DatabaseStream,
    cursor: &str,
) -> SourceError {
    match db.open(stream, request(&["id"], Some(cursor), 10)).await {
        Ok(_) => panic!("open should fail"),
        Err(error) => error,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_come_in_batches_of_the_requested_size() {
    let setup = "CREATE TABLE items (code text PRIMARY KEY, shop int4, amount numeric(8,2));
                 INSERT INTO items SELECT 'I' || n, n % 2, n FROM generate_series(1, 5) n;";
    with_database(setup, &[], |name| async move {
        let db = database(&name);
        let stream = query("items", "SELECT * FROM items ORDER BY code;");
        let mut source = db
            .open(&stream, request(&["shop", "code"], None, 2))
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        let sizes: Vec<usize> = batches.iter().map(|b| b.rows.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let lines: Vec<Vec<u64>> = batches
            .iter()
            .map(|b| b.rows.origin_lines.clone())
            .collect();
        assert_eq!(lines, [vec![1, 2], vec![3, 4], vec![5]]);
        assert!(source.is_complete_read());
        let RowOrigin::Relation { relation, keys, .. } = &batches[1].origin else {
            panic!("relation origin")
        };
        assert_eq!(relation, "items");
        assert_eq!(keys, &["1,I3", "0,I4"]);
        assert_eq!(batches[1].describe(4), "items row 4 (shop,code=0,I4)");
        assert_eq!(texts(&batches, "amount")[4].as_deref(), Some("5.00"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_failures_are_classified_without_the_password() {
    let closed = PostgresDatabase::new(&spec("postgres", "postgres", 1), PASSWORD.into()).unwrap();
    let error = closed.discover().await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Unreachable, "{error}");
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    assert_no_password(&error);

    let nobody = unique("nobody");
    let stranger =
        PostgresDatabase::new(&spec("postgres", &nobody, 5432), PASSWORD.into()).unwrap();
    let error = stranger.check(&[]).await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Login, "{error}");
    assert!(error.to_string().contains(&nobody), "{error}");
    assert_no_password(&error);

    let missing_db = database(&unique("no_such_db"));
    let error = missing_db.discover().await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");

    let mut verify = spec("postgres", "postgres", 5432);
    verify.tls = TlsMode::VerifyFull;
    let verify = PostgresDatabase::new(&verify, PASSWORD.into()).unwrap();
    let error = verify.discover().await.unwrap_err();
    assert_eq!(error.kind, SourceErrorKind::Tls, "{error}");
    assert_no_password(&error);

    let shown = format!("{closed:?}");
    assert!(
        !shown.contains(PASSWORD) && shown.contains("127.0.0.1"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_may_not_log_in_is_refused_as_login() {
    let role = unique("ls_nologin");
    let setup = format!("CREATE ROLE {} NOLOGIN;", quote_ident(&role));
    let user = role.clone();
    with_database(&setup, &[&role], |name| async move {
        let db = PostgresDatabase::new(&spec(&name, &user, 5432), PASSWORD.into()).unwrap();
        let error = db.discover().await.unwrap_err();
        assert_eq!(error.kind, SourceErrorKind::Login, "{error}");
        assert_no_password(&error);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn definition_and_permission_errors_name_what_to_fix() {
    let role = unique("ls_reader");
    let setup = format!(
        "CREATE TABLE sales (id int4 PRIMARY KEY, amount numeric(10,2), ratio float8, photo bytea);
         CREATE TABLE open_sales (id int4 PRIMARY KEY, amount numeric(10,2));
         INSERT INTO sales VALUES (1, 2.50, 0.25, '\\x00');
         CREATE ROLE {r} LOGIN;
         GRANT SELECT ON open_sales TO {r};",
        r = quote_ident(&role)
    );
    let user = role.clone();
    with_database(&setup, &[&role], |name| async move {
        let db = database(&name);

        let error = open_error(&db, &table("s", "public.nowhere", None), &[]).await;
        assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
        assert!(error.to_string().contains("nowhere"), "{error}");

        let stream = query("s", "SELECT id, amount FROM sales");
        let error = open_error(&db, &stream, &["sale_no"]).await;
        assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
        assert!(error.to_string().contains("'sale_no'"), "{error}");
        let cursor = table("s", "open_sales", Some(("changed_at", None)));
        let error = open_error(&db, &cursor, &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Definition, "{error}");
        let message = error.to_string();
        assert!(
            message.contains("'changed_at'") && message.contains("open_sales"),
            "{message}"
        );

        let bytes = query("s", "SELECT id, photo FROM sales");
        let error = open_error(&db, &bytes, &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Type, "{error}");
        let message = error.to_string();
        assert!(
            message.contains("'photo'") && message.contains("bytea"),
            "{message}"
        );

        let error = open_error(&db, &table("s", "sales", None), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Type, "{error}");
        let message = error.to_string();
        assert!(
            message.contains("sales")
                && message.contains("'ratio'")
                && message.contains("numeric")
                && message.contains("query"),
            "{message}"
        );
        // The advised query reads.
        let cast = query("s", "SELECT id, ratio::numeric(6,4) AS ratio FROM sales");
        let mut source = db.open(&cast, request(&["id"], None, 10)).await.unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "ratio"), some(&["0.2500"]));

        let reader = PostgresDatabase::new(&spec(&name, &user, 5432), PASSWORD.into()).unwrap();
        let error = open_error(&reader, &table("s", "sales", None), &["id"]).await;
        assert_eq!(error.kind, SourceErrorKind::Permission, "{error}");
        assert!(error.to_string().contains(user.as_str()), "{error}");
        let mut source = reader
            .open(&table("s", "open_sales", None), request(&["id"], None, 10))
            .await
            .unwrap();
        assert!(read_all(source.as_mut()).await.unwrap().is_empty());
        // discover lists only what the user may read.
        let tables = reader.discover().await.unwrap();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["open_sales"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_query_is_cancelled_as_a_timeout() {
    with_database("SELECT 1;", &[], |name| async move {
        let mut spec = spec(&name, "postgres", 5432);
        spec.statement_timeout_secs = 1;
        let db = PostgresDatabase::new(&spec, PASSWORD.into()).unwrap();
        let slow = query("slow", "SELECT 1 AS x FROM pg_sleep(3)");
        let error = open_error(&db, &slow, &[]).await;
        assert_eq!(error.kind, SourceErrorKind::Timeout, "{error}");
        assert!(error.to_string().contains("1 s"), "{error}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_and_check_describe_the_database() {
    let setup = format!(
        "{SALES}
         CREATE TABLE blobs (id int4 NOT NULL, data bytea);
         CREATE VIEW paid_sales AS SELECT sale_id, amount FROM sales WHERE paid;"
    );
    with_database(&setup, &[], |name| async move {
        let db = database(&name);
        let tables = db.discover().await.unwrap();
        let names: Vec<(&str, &str)> = tables
            .iter()
            .map(|t| (t.schema.as_str(), t.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("public", "blobs"),
                ("public", "paid_sales"),
                ("public", "sales")
            ]
        );
        let sales = &tables[2];
        let described: Vec<(&str, &str, Option<CanonicalType>, bool)> = sales
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.source_type.as_str(),
                    c.canonical,
                    c.nullable,
                )
            })
            .collect();
        use CanonicalType::*;
        assert_eq!(
            described,
            [
                ("sale_id", "text", Some(Text), false),
                ("amount", "numeric(18,4)", Some(Decimal), true),
                ("big", "numeric(40,10)", Some(Decimal), true),
                ("price", "money", Some(Decimal), true),
                (
                    "sold_at",
                    "timestamp with time zone",
                    Some(TimestampTz),
                    true
                ),
                (
                    "local_at",
                    "timestamp without time zone",
                    Some(Timestamp),
                    true
                ),
                ("day", "date", Some(Date), true),
                ("note", "text", Some(Text), true),
                ("paid", "boolean", Some(Boolean), true),
                ("seq", "bigint", Some(Integer), true),
                ("qty", "integer", Some(Integer), true),
            ]
        );
        assert_eq!(tables[0].columns[1].canonical, None, "bytea");

        let check = db
            .check(&[
                table("pos_sales", "public.sales", Some(("sold_at", Some("10m")))),
                query("paid", "SELECT * FROM paid_sales"),
            ])
            .await
            .unwrap();
        assert!(
            check.server.starts_with("PostgreSQL 15."),
            "{}",
            check.server
        );
        assert_eq!(
            check.streams,
            [
                "pos_sales: public.sales readable (3 rows)",
                "paid: query readable (1 rows)"
            ]
        );
        let error = db
            .check(&[table("blobs", "blobs", None)])
            .await
            .unwrap_err();
        assert_eq!(error.kind, SourceErrorKind::Type, "{error}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identifiers_with_quotes_and_spaces_are_quoted() {
    let setup = r#"
        CREATE SCHEMA "Shop Floor";
        CREATE TABLE "Shop Floor"."odd ""sales"" 2024" (
            "sale id" int4 PRIMARY KEY, "amount ""gross""" numeric(10,2), "Changed" timestamptz);
        INSERT INTO "Shop Floor"."odd ""sales"" 2024" VALUES
            (1, 1.10, '2024-01-01 00:00:00+00'), (2, 2.20, '2024-01-02 00:00:00+00');"#;
    with_database(setup, &[], |name| async move {
        let db = database(&name);
        let stream = table(
            "odd",
            "Shop Floor.odd \"sales\" 2024",
            Some(("Changed", None)),
        );
        let mut source = db
            .open(
                &stream,
                request(&["sale id"], Some("2024-01-02T00:00:00Z"), 10),
            )
            .await
            .unwrap();
        let batches = read_all(source.as_mut()).await.unwrap();
        assert_eq!(texts(&batches, "amount \"gross\""), some(&["2.20"]));
        assert_eq!(texts(&batches, "sale id"), some(&["2"]));
        // A name holding a dot is given in quotes.
        assert_eq!(split_table("\"a.b\".\"c\"\"d\"").unwrap(), ["a.b", "c\"d"]);
        assert!(split_table("a.b.c").is_err());
    })
    .await;
}

/// Columns asked for as instants come as `Datetime(µs, UTC)` holding the instants
/// their texts name; a key column stays text, the cursor reads as before, and a
/// local time in a DST gap is still refused by name.
#[tokio::test(flavor = "multi_thread")]
async fn instants_asked_for_are_the_instants_of_their_texts() {
    let setup =
        "CREATE TABLE shifts (at timestamp PRIMARY KEY, ended timestamptz, moved timestamp);
                 INSERT INTO shifts VALUES
                   ('2024-03-01 10:15:30', '2024-03-01 12:00:00.25+00', '2024-03-01 00:00:00'),
                   ('2024-03-02 10:15:30', NULL, '2024-03-31 02:30:00');";
    with_database(setup, &[], |name| async move {
        let mut spec = spec(&name, "postgres", 5432);
        spec.source_timezone = Some("Asia/Jakarta".into());
        let db = PostgresDatabase::new(&spec, SecretString::from(PASSWORD)).unwrap();
        let stream = table("shifts", "shifts", Some(("ended", None)));
        let read = |instants: &[&str]| {
            let mut request = request(&["at"], None, 10);
            request.instant_columns = instants.iter().map(|c| c.to_string()).collect();
            let (db, stream) = (&db, &stream);
            async move {
                let mut source = db.open(stream, request).await.unwrap();
                let batches = read_all(source.as_mut()).await.unwrap();
                (batches, source.cursor())
            }
        };
        let (as_texts, text_cursor) = read(&[]).await;
        let (as_instants, instant_cursor) = read(&["at", "ended", "moved"]).await;
        assert_eq!(instant_cursor, text_cursor);
        assert_eq!(text_cursor.as_deref(), Some("2024-03-01T12:00:00.250000Z"));
        assert_eq!(
            texts(&as_instants, "at"),
            texts(&as_texts, "at"),
            "a key stays text"
        );
        for column in ["ended", "moved"] {
            let frame = &as_instants[0].rows.frame;
            let instants: Vec<Option<String>> = frame
                .column(column)
                .unwrap()
                .datetime()
                .unwrap()
                .physical()
                .iter()
                .map(|micros| {
                    micros.map(|m| {
                        typesystem::instant_text(
                            chrono::DateTime::from_timestamp_micros(m).unwrap(),
                        )
                    })
                })
                .collect();
            assert_eq!(instants, texts(&as_texts, column), "{column}");
        }

        // A timestamp cursor read in a zone stays naive, batch after batch.
        let by_moved = table("shifts", "shifts", Some(("moved", None)));
        let mut cursors = Vec::new();
        for instants in [vec![], vec!["moved".to_string()]] {
            let mut request = request(&["at"], None, 1);
            request.instant_columns = instants;
            let mut source = db.open(&by_moved, request).await.unwrap();
            read_all(source.as_mut()).await.unwrap();
            cursors.push(source.cursor());
        }
        assert_eq!(cursors[0].as_deref(), Some("2024-03-31 02:30:00"));
        assert_eq!(cursors[1], cursors[0]);

        spec.source_timezone = Some("Europe/Berlin".into());
        let db = PostgresDatabase::new(&spec, SecretString::from(PASSWORD)).unwrap();
        let mut request = request(&["at"], None, 10);
        request.instant_columns = vec!["moved".into()];
        let mut source = db.open(&stream, request).await.unwrap();
        let error = read_all(source.as_mut()).await.expect_err("a DST gap");
        assert!(error.to_string().contains("2024-03-31 02:30:00"), "{error}");
    })
    .await;
}
