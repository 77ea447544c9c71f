//! The canonical ledger every source maps into, and the aggregate shapes read by
//! reports: accounts, transactions, postings, exact fixed-point money and periods.

mod account;
mod amount;
mod chart;
mod excerpt;
mod ledger;
mod period;
mod posting_frame;
mod report;
mod short_texts;
pub mod time_text;

pub use account::{Account, AccountClass, CashFlowSection};
pub use amount::{Amount, AmountError, SCALE as AMOUNT_SCALE};
pub use chart::default_chart;
pub use excerpt::{bounded, excerpt, EXCERPT_CHARS};
pub use ledger::{LedgerError, Posting, RowError, Transaction};
pub use period::{Grouping, Month, MonthError, Period};
pub use posting_frame::{posting_column, PostingFrame};
pub use report::{
    CashFlowRow, CogsRow, FigureOverflow, MonthMetrics, PnlRow, ReportKind, StaffRow, BRANCH_TOTAL,
};
pub use short_texts::{short_text_key, ShortTexts, TextArray, INLINE_TEXT};
