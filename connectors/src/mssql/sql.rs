//! The SQL a SQL Server source sends: identifiers in brackets, the cursor bound
//! as the parameter `@P1`, and the session settings every connection starts with.
//! Nothing from configuration reaches SQL any other way.

use std::time::Duration;

use ledgersync_config::DatabaseStream;

/// An identifier in brackets, a `]` inside doubled.
pub fn quote(identifier: &str) -> String {
    format!("[{}]", identifier.replace(']', "]]"))
}

/// `table` or `schema.table`, each part verbatim or in brackets when it holds a
/// dot (`[my.schema].sales`, with `]]` for a `]`).
pub fn split_table(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'[') {
            chars.next();
            loop {
                match chars.next() {
                    Some(']') if chars.peek() == Some(&']') => {
                        chars.next();
                        part.push(']');
                    }
                    Some(']') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("table '{text}' has an unclosed bracket")),
                }
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(format!("table '{text}': text after a closing bracket"));
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.') {
                part.push(c);
            }
        }
        if part.is_empty() {
            return Err(format!("table '{text}' is not `table` or `schema.table`"));
        }
        parts.push(part);
        if chars.next().is_none() {
            break;
        }
    }
    if parts.len() > 2 {
        return Err(format!(
            "table '{text}' is not `table` or `schema.table` (bracket a name holding a dot: [a.b])"
        ));
    }
    Ok(parts)
}

/// A stream's relation: the FROM item (aliased `src`) and its name in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub from: String,
    pub name: String,
}

impl Relation {
    pub fn of(stream: &DatabaseStream) -> Result<Relation, String> {
        match (&stream.table, &stream.query) {
            (Some(table), None) => {
                let parts = split_table(table)?;
                Ok(Relation {
                    from: format!(
                        "{} AS src",
                        parts.iter().map(|p| quote(p)).collect::<Vec<_>>().join(".")
                    ),
                    name: table.clone(),
                })
            }
            (None, Some(query)) => {
                let query = query.trim().trim_end_matches(';').trim_end();
                Ok(Relation {
                    from: format!("({query}) AS src"),
                    name: format!("query of stream {}", stream.name),
                })
            }
            _ => Err("needs exactly one of `table` or `query`".to_owned()),
        }
    }
}

/// The stream's one query: everything, or from the cursor bound `@P1` on, in
/// cursor order and then key order (so rows sharing a cursor value come in the
/// same order every time); every column, or only `columns`.
pub fn select(
    relation: &Relation,
    columns: Option<&[String]>,
    cursor: Option<&str>,
    bounded: bool,
    keys: &[String],
) -> String {
    let projection = match columns {
        None => "*".to_owned(),
        Some(columns) => columns
            .iter()
            .map(|c| format!("src.{}", quote(c)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut sql = format!("SELECT {projection} FROM {}", relation.from);
    if let Some(cursor) = cursor {
        if bounded {
            sql.push_str(&format!(" WHERE src.{} >= @P1", quote(cursor)));
        }
        let order: Vec<String> = std::iter::once(cursor)
            .chain(keys.iter().map(String::as_str).filter(|k| *k != cursor))
            .map(|c| format!("src.{}", quote(c)))
            .collect();
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    sql
}

/// The relation's columns without its rows; the server checks SELECT permission
/// on it all the same.
pub fn probe(relation: &Relation) -> String {
    format!("SELECT TOP (0) * FROM {}", relation.from)
}

pub fn count(relation: &Relation) -> String {
    format!("SELECT COUNT_BIG(*) FROM {}", relation.from)
}

/// The server's version, and whether the database allows SNAPSHOT isolation
/// (`snapshot_isolation_state` 1 = ON).
pub const SERVER: &str = "SELECT CAST(SERVERPROPERTY('ProductVersion') AS NVARCHAR(128)), \
     CAST(SERVERPROPERTY('Edition') AS NVARCHAR(128)), \
     CAST(COALESCE((SELECT snapshot_isolation_state FROM sys.databases WHERE database_id = DB_ID()), 0) AS INT)";

/// Columns of the tables and views the user may SELECT, with the type as
/// written in a CREATE TABLE.
pub const DISCOVER: &str = "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, \
     CAST(c.CHARACTER_MAXIMUM_LENGTH AS INT), CAST(c.NUMERIC_PRECISION AS INT), \
     CAST(c.NUMERIC_SCALE AS INT), CAST(c.DATETIME_PRECISION AS INT), c.IS_NULLABLE \
     FROM INFORMATION_SCHEMA.COLUMNS AS c \
     JOIN INFORMATION_SCHEMA.TABLES AS t \
       ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
     WHERE t.TABLE_TYPE IN ('BASE TABLE', 'VIEW') \
       AND HAS_PERMS_BY_NAME(QUOTENAME(c.TABLE_SCHEMA) + '.' + QUOTENAME(c.TABLE_NAME), 'OBJECT', 'SELECT') = 1 \
     ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION";

/// `decimal(19,4)`, `nvarchar(max)`, `datetime2(7)`: the type as the DBA knows it.
pub fn source_type(
    data_type: &str,
    length: Option<i32>,
    precision: Option<i32>,
    scale: Option<i32>,
    datetime_precision: Option<i32>,
) -> String {
    let name = data_type.to_ascii_lowercase();
    match name.as_str() {
        "char" | "varchar" | "nchar" | "nvarchar" | "binary" | "varbinary" => match length {
            Some(-1) => format!("{name}(max)"),
            Some(n) => format!("{name}({n})"),
            None => name,
        },
        "decimal" | "numeric" => match (precision, scale) {
            (Some(p), Some(s)) => format!("{name}({p},{s})"),
            _ => name,
        },
        "datetime2" | "datetimeoffset" | "time" => match datetime_precision {
            Some(p) => format!("{name}({p})"),
            None => name,
        },
        _ => name,
    }
}

/// The client-side wait for each answer of the server, and the server's lock
/// wait in ms: SQL Server has no statement timeout of its own. 0 means none.
pub fn timeouts(statement_timeout_secs: u64) -> (Option<Duration>, i64) {
    if statement_timeout_secs == 0 {
        return (None, -1);
    }
    let lock_ms = statement_timeout_secs
        .saturating_mul(1000)
        .min(i32::MAX as u64);
    (
        Some(Duration::from_secs(statement_timeout_secs)),
        lock_ms as i64,
    )
}

/// The settings every connection starts with, ending in a transaction that is
/// always rolled back. SQL Server has no read-only transaction: the login should
/// hold only `db_datareader`, the connection says ApplicationIntent=ReadOnly,
/// and whatever a stream's query might change is undone at the end.
/// SNAPSHOT (when the database allows it) reads one consistent version without
/// blocking writers; else READ COMMITTED, which is a statement snapshot under
/// READ_COMMITTED_SNAPSHOT and short shared locks otherwise.
pub fn session(lock_timeout_ms: i64, snapshot: bool) -> String {
    let isolation = if snapshot {
        "SNAPSHOT"
    } else {
        "READ COMMITTED"
    };
    format!(
        "SET NOCOUNT ON; SET XACT_ABORT ON; SET IMPLICIT_TRANSACTIONS OFF; \
         SET DATEFORMAT ymd; SET LOCK_TIMEOUT {lock_timeout_ms}; \
         SET TRANSACTION ISOLATION LEVEL {isolation}; BEGIN TRANSACTION;"
    )
}

pub const END: &str = "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;";

#[cfg(test)]
mod unit {
    use super::*;

    fn stream(table: Option<&str>, query: Option<&str>) -> DatabaseStream {
        DatabaseStream {
            name: "pos_sales".into(),
            table: table.map(Into::into),
            query: query.map(Into::into),
            mapping: "m.toml".into(),
            cursor: None,
        }
    }

    #[test]
    fn identifiers_are_bracketed_with_closing_brackets_doubled() {
        assert_eq!(quote("sales"), "[sales]");
        assert_eq!(quote("a]b"), "[a]]b]");
        assert_eq!(quote("x]; DROP TABLE t; --"), "[x]]; DROP TABLE t; --]");
        assert_eq!(quote("Order Lines"), "[Order Lines]");
    }

    #[test]
    fn tables_split_into_schema_and_name() {
        assert_eq!(split_table("sales").unwrap(), ["sales"]);
        assert_eq!(split_table("dbo.sales").unwrap(), ["dbo", "sales"]);
        assert_eq!(
            split_table("[my.schema].[a]]b]").unwrap(),
            ["my.schema", "a]b"]
        );
        assert!(split_table("a.b.c").is_err());
        assert!(split_table("[open").is_err());
        assert!(split_table("dbo.").is_err());
        assert!(split_table("[a]x.b").is_err());
    }

    #[test]
    fn the_read_binds_the_cursor_and_orders_by_cursor_then_key() {
        let relation = Relation::of(&stream(Some("dbo.sales"), None)).unwrap();
        assert_eq!(relation.from, "[dbo].[sales] AS src");
        assert_eq!(relation.name, "dbo.sales");
        let keys = vec!["sale_id".to_string(), "line]no".to_string()];
        assert_eq!(
            select(&relation, None, Some("updated_at"), true, &keys),
            "SELECT * FROM [dbo].[sales] AS src WHERE src.[updated_at] >= @P1 \
             ORDER BY src.[updated_at], src.[sale_id], src.[line]]no]"
        );
        // First read of an incremental stream: no bound, same order.
        assert_eq!(
            select(&relation, None, Some("sale_id"), false, &keys[..1]),
            "SELECT * FROM [dbo].[sales] AS src ORDER BY src.[sale_id]"
        );
        // A full read needs no order.
        assert_eq!(
            select(&relation, None, None, false, &keys),
            "SELECT * FROM [dbo].[sales] AS src"
        );
        // A key reconcile reads the keys alone.
        assert_eq!(
            select(&relation, Some(&keys), None, false, &keys),
            "SELECT src.[sale_id], src.[line]]no] FROM [dbo].[sales] AS src"
        );
        let query = Relation::of(&stream(None, Some(" SELECT a, b FROM t;  "))).unwrap();
        assert_eq!(query.from, "(SELECT a, b FROM t) AS src");
        assert_eq!(query.name, "query of stream pos_sales");
        assert_eq!(
            select(&query, None, Some("b"), true, &[]),
            "SELECT * FROM (SELECT a, b FROM t) AS src WHERE src.[b] >= @P1 ORDER BY src.[b]"
        );
        assert_eq!(
            probe(&query),
            "SELECT TOP (0) * FROM (SELECT a, b FROM t) AS src"
        );
        assert_eq!(
            count(&relation),
            "SELECT COUNT_BIG(*) FROM [dbo].[sales] AS src"
        );
        assert!(Relation::of(&stream(None, None)).is_err());
        assert!(Relation::of(&stream(Some("t"), Some("SELECT 1"))).is_err());
    }

    #[test]
    fn sessions_are_rolled_back_with_lock_and_answer_timeouts() {
        let (answer, lock) = timeouts(600);
        assert_eq!(answer, Some(Duration::from_secs(600)));
        assert_eq!(lock, 600_000);
        assert_eq!(
            session(lock, false),
            "SET NOCOUNT ON; SET XACT_ABORT ON; SET IMPLICIT_TRANSACTIONS OFF; \
             SET DATEFORMAT ymd; SET LOCK_TIMEOUT 600000; \
             SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN TRANSACTION;"
        );
        assert!(session(5000, true).contains("SET TRANSACTION ISOLATION LEVEL SNAPSHOT;"));
        // LOCK_TIMEOUT is an int of milliseconds; 0 seconds means no timeout.
        assert_eq!(timeouts(u64::MAX).1, i64::from(i32::MAX));
        assert_eq!(timeouts(0), (None, -1));
        assert_eq!(END, "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;");
    }

    #[test]
    fn discovered_types_read_as_declared() {
        assert_eq!(
            source_type("decimal", None, Some(19), Some(4), None),
            "decimal(19,4)"
        );
        assert_eq!(
            source_type("NVARCHAR", Some(-1), None, None, None),
            "nvarchar(max)"
        );
        assert_eq!(
            source_type("varchar", Some(40), None, None, None),
            "varchar(40)"
        );
        assert_eq!(
            source_type("datetime2", None, None, None, Some(7)),
            "datetime2(7)"
        );
        assert_eq!(source_type("int", None, Some(10), Some(0), None), "int");
        assert_eq!(source_type("money", None, Some(19), Some(4), None), "money");
        assert!(DISCOVER.contains("HAS_PERMS_BY_NAME"));
    }
}
