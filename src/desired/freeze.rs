//! Freeze windows: times in which no new release starts. A window begins on each listed day at
//! `from` and ends at `to` the same day, or the next day when `to` is not after `from` (a
//! window across midnight); both are read in the window's IANA time zone, with its daylight
//! saving rules (jiff's bundled time-zone database), so `16:00` means 16:00 on the wall clock
//! of that place whatever the season. Any window of the list that covers now freezes.

use std::time::SystemTime;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

#[derive(Debug, Clone, PartialEq)]
pub struct FreezeWindow {
    /// The days a window begins on; all days when the file lists none.
    pub days: Vec<Weekday>,
    pub from: Time,
    pub to: Time,
    /// The IANA name, for messages.
    pub timezone: String,
    pub tz: TimeZone,
}

impl Eq for FreezeWindow {}

/// `mon` .. `sun`.
pub fn parse_day(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// `HH:MM`, 24-hour.
pub fn parse_time(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

/// The IANA time zone of that name.
pub fn parse_timezone(s: &str) -> Option<TimeZone> {
    TimeZone::get(s).ok()
}

impl FreezeWindow {
    /// The end of this window's occurrence that covers `now`, if one does.
    fn covering(&self, now: Timestamp) -> Option<ZonedDateTime> {
        let today = now.to_zoned_datetime(self.tz.clone()).date();
        // An occurrence begins today, or (across midnight) began yesterday.
        for start_day in [today.yesterday().ok()?, today] {
            if !self.days.is_empty() && !self.days.contains(&start_day.weekday()) {
                continue;
            }
            let (start, end) = self.occurrence(start_day)?;
            if start.timestamp() <= now && now < end.timestamp() {
                return Some(end);
            }
        }
        None
    }

    /// The window that begins on `day`, as zoned times (a time a DST change skips or repeats
    /// is taken as jiff's `compatible` rule does: the later instant for a gap, the earlier
    /// for a fold).
    fn occurrence(&self, day: Date) -> Option<(ZonedDateTime, ZonedDateTime)> {
        let start = day
            .to_datetime(self.from)
            .to_zoned_datetime(self.tz.clone())
            .ok()?;
        let end_day = if self.to > self.from {
            day
        } else {
            day.tomorrow().ok()?
        };
        let end = end_day
            .to_datetime(self.to)
            .to_zoned_datetime(self.tz.clone())
            .ok()?;
        Some((start, end))
    }
}

/// When the freeze that covers `now` ends (the latest end, if windows overlap), with the
/// window's time zone name; `None` when no window covers now.
pub fn frozen_until(windows: &[FreezeWindow], now: SystemTime) -> Option<(SystemTime, String)> {
    let now = Timestamp::try_from(now).ok()?;
    windows
        .iter()
        .filter_map(|w| w.covering(now).map(|end| (end, w)))
        .max_by_key(|(end, _)| end.timestamp())
        .and_then(|(end, w)| {
            Some((
                SystemTime::try_from(end.timestamp()).ok()?,
                format!("{} ({})", end.strftime("%Y-%m-%d %H:%M %Z"), w.timezone),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn window(days: &[&str], from: &str, to: &str, tz: &str) -> FreezeWindow {
        FreezeWindow {
            days: days.iter().map(|d| parse_day(d).unwrap()).collect(),
            from: parse_time(from).unwrap(),
            to: parse_time(to).unwrap(),
            timezone: tz.into(),
            tz: parse_timezone(tz).unwrap(),
        }
    }

    fn at(rfc3339: &str) -> SystemTime {
        SystemTime::try_from(rfc3339.parse::<Timestamp>().unwrap()).unwrap()
    }

    #[test]
    fn a_window_across_midnight_in_riyadh_covers_the_night_and_ends_the_next_morning() {
        // Friday 16:00 to Saturday 08:00 in Riyadh (UTC+3, no DST).
        let w = [window(&["fri"], "16:00", "08:00", "Asia/Riyadh")];
        // 2026-11-27 is a Friday. 15:59 local is 12:59Z: not yet.
        assert_eq!(frozen_until(&w, at("2026-11-27T12:59:00Z")), None);
        let (end, said) = frozen_until(&w, at("2026-11-27T13:00:00Z")).unwrap();
        assert_eq!(end, at("2026-11-28T05:00:00Z"), "Saturday 08:00 local");
        assert!(
            said.contains("2026-11-28 08:00") && said.contains("Asia/Riyadh"),
            "{said}"
        );
        // Saturday 03:00 local: still the window that began on Friday.
        assert!(frozen_until(&w, at("2026-11-28T00:00:00Z")).is_some());
        // Saturday 08:00 local: over; Saturday is not a day a window begins.
        assert_eq!(frozen_until(&w, at("2026-11-28T05:00:00Z")), None);
        assert_eq!(frozen_until(&w, at("2026-11-28T14:00:00Z")), None);
    }

    #[test]
    fn a_window_across_a_dst_change_in_berlin_keeps_wall_clock_times() {
        // Saturday 22:00 to Sunday 04:00, Berlin. On 2026-10-25 clocks go back from 03:00 CEST
        // to 02:00 CET: that night the window lasts 7 hours, other nights 6.
        let w = [window(&["sat"], "22:00", "04:00", "Europe/Berlin")];
        let (end, _) = frozen_until(&w, at("2026-10-24T20:00:00Z")).unwrap(); // 22:00 CEST
        assert_eq!(end, at("2026-10-25T03:00:00Z"), "04:00 CET");
        assert_eq!(
            end.duration_since(at("2026-10-24T20:00:00Z")).unwrap(),
            Duration::from_secs(7 * 3600)
        );
        assert!(
            frozen_until(&w, at("2026-10-24T19:59:00Z")).is_none(),
            "21:59 CEST"
        );
        // A summer Saturday: 22:00 CEST to 04:00 CEST, six hours.
        let (end, _) = frozen_until(&w, at("2026-07-04T21:30:00Z")).unwrap();
        assert_eq!(end, at("2026-07-05T02:00:00Z"));
        // Spring forward (2026-03-29, 02:00 CET -> 03:00 CEST): 22:00 CET to 04:00 CEST, five.
        let (end, _) = frozen_until(&w, at("2026-03-28T21:00:00Z")).unwrap();
        assert_eq!(end, at("2026-03-29T02:00:00Z"));
    }

    #[test]
    fn no_days_means_every_day_and_overlapping_windows_freeze_until_the_latest_end() {
        let w = [
            window(&[], "09:00", "17:00", "UTC"),
            window(&["wed"], "12:00", "20:00", "UTC"),
        ];
        // 2026-11-25 is a Wednesday.
        let (end, _) = frozen_until(&w, at("2026-11-25T13:00:00Z")).unwrap();
        assert_eq!(end, at("2026-11-25T20:00:00Z"));
        let (end, _) = frozen_until(&w, at("2026-11-26T10:00:00Z")).unwrap();
        assert_eq!(end, at("2026-11-26T17:00:00Z"));
        assert!(frozen_until(&w, at("2026-11-26T17:00:00Z")).is_none());
    }

    #[test]
    fn days_times_and_zones_parse_strictly() {
        assert_eq!(parse_day("FRI"), Some(Weekday::Friday));
        assert_eq!(parse_day("friday"), None);
        assert_eq!(parse_time("16:00"), Time::new(16, 0, 0, 0).ok());
        for bad in ["24:00", "9:00", "16:60", "1600", ""] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert!(parse_timezone("Asia/Riyadh").is_some());
        assert!(parse_timezone("Mars/Olympus").is_none());
    }
}
