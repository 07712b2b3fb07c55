//! The text `rendezvous sessions` prints: a task's hosts and sessions as an
//! aligned table, one session a line, session ID first.

use rendezvous_proto::v1::HostInfo;

/// The table's header line, before alignment.
const HEADER: [&str; 6] = ["SESSION", "HOST", "SIZE", "GUESTS", "STARTED", "LABELS"];

/// Spaces between columns.
const GAP: &str = "  ";

/// Formats `hosts` as a table with a header line and one line per session:
/// `SESSION  HOST  SIZE  GUESTS  STARTED  LABELS`, where SIZE is COLSxROWS,
/// STARTED is UTC (RFC 3339, seconds) and LABELS are the host's labels as
/// `key=value` separated by commas. Hosts are sorted by name, sessions by
/// start time.
///
/// A host with no sessions still shows up, as one line whose SESSION (and
/// SIZE, GUESTS, STARTED) is `-`, so `awk '$1 != "-"'` keeps sessions only.
/// A task with no hosts prints one line saying so.
pub fn format_sessions(hosts: &[HostInfo]) -> String {
    if hosts.is_empty() {
        return "no hosts are connected for this task\n".to_owned();
    }
    // The wire's empty host name means the default host.
    let mut hosts: Vec<(&str, &HostInfo)> = hosts
        .iter()
        .map(|host| match host.host_name.as_str() {
            "" => (rendezvous_proto::ids::DEFAULT_HOST_NAME, host),
            name => (name, host),
        })
        .collect();
    hosts.sort_by_key(|&(name, _)| name);

    let mut rows: Vec<[String; 6]> = vec![HEADER.map(str::to_owned)];
    for (host_name, host) in hosts {
        let mut labels: Vec<(&String, &String)> = host.labels.iter().collect();
        labels.sort();
        let labels = labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",");
        let host_name = host_name.to_owned();
        if host.sessions.is_empty() {
            rows.push([
                "-".to_owned(),
                host_name,
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                labels,
            ]);
            continue;
        }
        let mut sessions: Vec<_> = host.sessions.iter().collect();
        sessions.sort_by(|a, b| {
            (a.started_at_unix_ms, &a.session_id).cmp(&(b.started_at_unix_ms, &b.session_id))
        });
        for session in sessions {
            rows.push([
                session.session_id.clone(),
                host_name.clone(),
                format!("{}x{}", session.cols, session.rows),
                session.guest_count.to_string(),
                format_unix_ms(session.started_at_unix_ms),
                labels.clone(),
            ]);
        }
    }
    align(&rows)
}

/// Pads every column but the last to its widest cell; no trailing spaces.
fn align(rows: &[[String; 6]]) -> String {
    let mut widths = [0; 6];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Milliseconds since the Unix epoch as UTC `YYYY-MM-DDTHH:MM:SSZ`; `-` for
/// zero or negative (unknown) times.
pub fn format_unix_ms(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".to_owned();
    }
    let seconds = unix_ms / 1000;
    let (days, day_seconds) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        day_seconds / 3600,
        day_seconds % 3600 / 60,
        day_seconds % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), for non-negative counts.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rendezvous_proto::v1::SessionInfo;

    fn session(id: &str, started_at_unix_ms: i64, guest_count: u32) -> SessionInfo {
        SessionInfo {
            session_id: id.to_owned(),
            cols: 120,
            rows: 40,
            started_at_unix_ms,
            guest_count,
            output_offset: 0,
        }
    }

    fn host(name: &str, sessions: Vec<SessionInfo>) -> HostInfo {
        HostInfo {
            host_name: name.to_owned(),
            labels: Default::default(),
            connected_at_unix_ms: 1_700_000_000_000,
            sessions,
        }
    }

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(format_unix_ms(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_unix_ms(951_782_400_999), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix_ms(1), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(0), "-");
    }

    #[test]
    fn sessions_are_listed_one_a_line_session_id_first() {
        let mut web = host("web", vec![session("s-2", 1_700_000_060_000, 0)]);
        web.labels.insert("job".to_owned(), "build-42".to_owned());
        web.labels.insert("arch".to_owned(), "x86_64".to_owned());
        let hosts = vec![
            web,
            host(
                "default",
                vec![
                    session("s-long-id", 1_700_000_001_000, 2),
                    session("s-1", 1_700_000_000_000, 1),
                ],
            ),
        ];
        assert_eq!(
            format_sessions(&hosts),
            "\
SESSION    HOST     SIZE    GUESTS  STARTED               LABELS
s-1        default  120x40  1       2023-11-14T22:13:20Z
s-long-id  default  120x40  2       2023-11-14T22:13:21Z
s-2        web      120x40  0       2023-11-14T22:14:20Z  arch=x86_64,job=build-42
"
        );
    }

    #[test]
    fn a_host_without_sessions_still_shows_up() {
        let hosts = vec![host("db", vec![]), host("", vec![session("s-1", 0, 0)])];
        assert_eq!(
            format_sessions(&hosts),
            "\
SESSION  HOST     SIZE    GUESTS  STARTED  LABELS
-        db       -       -       -
s-1      default  120x40  0       -
"
        );
    }

    #[test]
    fn a_task_without_hosts_says_so() {
        assert_eq!(
            format_sessions(&[]),
            "no hosts are connected for this task\n"
        );
    }
}
