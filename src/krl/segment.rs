//! Choosing the cheapest way to write one CA's revoked serials.
//!
//! `PROTOCOL.krl` sections 2.1 to 2.3 offer three subsections, each repeatable, each a type
//! byte and a `uint32` length before its body:
//!
//! * a serial list: `uint64` serials, 8 bytes each;
//! * a serial range: one `uint64` minimum and one `uint64` maximum, 16 bytes;
//! * a serial bitmap: a `uint64` offset then an `mpint` whose bit N revokes offset + N.
//!
//! The runs of consecutive serials are cut into consecutive groups, one subsection per group,
//! by dynamic programming over the runs with exact byte costs, so the plan is the smallest
//! among all plans that keep each run within one subsection. A bitmap starts at its group's
//! first serial, so its `mpint` takes `span / 8 + 1` bytes for `span` bits: the top bit is
//! always set, and when it lands on a byte's high bit the `mpint` needs a zero pad byte.

use std::collections::VecDeque;
use std::ops::Range;

use super::wire::MAX_BITMAP_BITS;
use super::SerialRange;

/// Type byte and `uint32` length of a subsection.
const SUBSECTION_HEADER: u64 = 1 + 4;

/// One serial in a list subsection.
const LIST_ENTRY: u64 = 8;

/// A whole range subsection.
const RANGE_SUBSECTION: u64 = SUBSECTION_HEADER + 16;

/// A bitmap subsection before its `mpint` magnitude: header, offset and `mpint` length.
const BITMAP_FIXED: u64 = SUBSECTION_HEADER + 8 + 4;

/// One subsection of the plan, naming the runs it covers by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Segment {
    /// A serial list holding every serial of these runs.
    List(Range<usize>),
    /// A serial range holding exactly this run.
    Range(usize),
    /// A serial bitmap from the first serial of these runs to the last.
    Bitmap(Range<usize>),
}

/// How the cheapest encoding of a prefix of the runs ends.
#[derive(Clone, Copy)]
enum LastStep {
    List,
    Range,
    Bitmap { first_run: usize },
}

/// Plans the subsections for `runs`: sorted, disjoint, non-adjacent, none containing zero.
pub(super) fn plan(runs: &[SerialRange]) -> Vec<Segment> {
    let count = runs.len();

    // best[j]: fewest bytes for runs[..j]; last_step[j]: how that encoding ends.
    let mut best = vec![0u64; count + 1];
    let mut last_step = vec![LastStep::Range; count + 1];

    // open_list[j]: fewest bytes for runs[..j] when the last subsection is a list that holds
    // run j - 1 and may take more; extends[j]: that list also holds run j - 2.
    let mut open_list = vec![u64::MAX; count + 1];
    let mut extends = vec![false; count + 1];

    let mut windows = BitmapWindows::default();

    for (index, run) in runs.iter().enumerate() {
        let before = best[index];
        let run_len = run.last.saturating_sub(run.first).saturating_add(1);

        // Extend the open list, or open a new one after the cheapest prefix.
        let fresh_list = before.saturating_add(SUBSECTION_HEADER);
        let (list_base, extended) = if open_list[index] <= fresh_list {
            (open_list[index], true)
        } else {
            (fresh_list, false)
        };
        open_list[index + 1] = list_base.saturating_add(run_len.saturating_mul(LIST_ENTRY));
        extends[index + 1] = extended;

        let mut cost = open_list[index + 1];
        let mut step = LastStep::List;

        let range_cost = before.saturating_add(RANGE_SUBSECTION);
        if range_cost < cost {
            cost = range_cost;
            step = LastStep::Range;
        }

        windows.offer(index, run.first, before);
        windows.retire_before(run.last);
        if let Some((first_run, bitmap_total)) = windows.cheapest(run.last) {
            if bitmap_total < cost {
                cost = bitmap_total;
                step = LastStep::Bitmap { first_run };
            }
        }

        best[index + 1] = cost;
        last_step[index + 1] = step;
    }

    // Walk the choices back from the end.
    let mut segments = Vec::new();
    let mut end = count;
    while end > 0 {
        match last_step[end] {
            LastStep::Range => {
                segments.push(Segment::Range(end - 1));
                end -= 1;
            }
            LastStep::Bitmap { first_run } => {
                segments.push(Segment::Bitmap(first_run..end));
                end = first_run;
            }
            LastStep::List => {
                let mut opened = end;
                while opened > 1 && extends[opened] {
                    opened -= 1;
                }
                segments.push(Segment::List(opened - 1..end));
                end = opened - 1;
            }
        }
    }
    segments.reverse();
    segments
}

/// Candidate first runs for a bitmap ending at the current run.
///
/// A bitmap over runs i..=j costs `best[i] + BITMAP_FIXED + 1 + (last_j + 1 - first_i) / 8`.
/// Writing `last_j + 1 = 8a + r` and `first_i = 8b + s`, the division is `a - b`, less one when
/// `r < s`. So per residue `s` the best start is the one with the least `best[i] - b`, which a
/// sliding-window minimum keeps, the window being the starts at most 16384 serials back.
#[derive(Default)]
struct BitmapWindows {
    by_residue: [VecDeque<Candidate>; 8],
}

#[derive(Clone, Copy)]
struct Candidate {
    run: usize,
    first: u64,
    key: i128,
}

impl BitmapWindows {
    /// Adds run `run`, starting at serial `first` after a prefix costing `before`.
    fn offer(&mut self, run: usize, first: u64, before: u64) {
        let key = i128::from(before) - i128::from(first / 8);
        let window = &mut self.by_residue[residue(first)];

        // A later start with no greater key is never worse and stays in the window longer.
        while window.back().is_some_and(|older| older.key >= key) {
            window.pop_back();
        }
        window.push_back(Candidate { run, first, key });
    }

    /// Drops starts too far back for a bitmap reaching serial `last`.
    fn retire_before(&mut self, last: u64) {
        for window in &mut self.by_residue {
            while window
                .front()
                .is_some_and(|start| start.first.saturating_add(MAX_BITMAP_BITS - 1) < last)
            {
                window.pop_front();
            }
        }
    }

    /// The cheapest start and total cost of a bitmap ending at serial `last`.
    fn cheapest(&self, last: u64) -> Option<(usize, u64)> {
        let end = u128::from(last) + 1;
        let end_bytes = i128::try_from(end / 8).ok()?;
        let end_residue = end % 8;
        let fixed = i128::from(BITMAP_FIXED + 1);

        let mut cheapest: Option<(usize, i128)> = None;
        for (start_residue, window) in (0u128..).zip(&self.by_residue) {
            let Some(start) = window.front() else {
                continue;
            };
            let borrow = i128::from(end_residue < start_residue);
            let total = start.key + end_bytes + fixed - borrow;
            if cheapest.is_none_or(|(_, so_far)| total < so_far) {
                cheapest = Some((start.run, total));
            }
        }

        let (run, total) = cheapest?;
        Some((run, u64::try_from(total).ok()?))
    }
}

/// Which of the eight per-residue windows a start belongs to.
fn residue(serial: u64) -> usize {
    // Always below 8, so the conversion is lossless.
    (serial % 8) as usize
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::krl::encode::put_serial_subsections;

    /// Reference optimum in quadratic time: every partition of the runs into groups, each
    /// group written as one list, one range (single run) or one bitmap.
    fn quadratic_optimum(runs: &[SerialRange]) -> u64 {
        let mut best = vec![u64::MAX; runs.len() + 1];
        best[0] = 0;
        for end in 1..=runs.len() {
            for start in 0..end {
                let group = &runs[start..end];
                let serials: u64 = group.iter().map(|run| run.last - run.first + 1).sum();
                let span = group[group.len() - 1].last - group[0].first + 1;

                let mut cost = SUBSECTION_HEADER + LIST_ENTRY * serials;
                if group.len() == 1 {
                    cost = cost.min(RANGE_SUBSECTION);
                }
                if span <= MAX_BITMAP_BITS {
                    cost = cost.min(BITMAP_FIXED + span / 8 + 1);
                }
                best[end] = best[end].min(best[start] + cost);
            }
        }
        best[runs.len()]
    }

    /// Random runs whose gaps and lengths straddle every break-even point of the costs,
    /// including the bitmap size limit.
    fn random_runs(rng: &mut StdRng) -> Vec<SerialRange> {
        let count = rng.gen_range(0..40);
        let mut next = rng.gen_range(1..100);
        let mut runs = Vec::with_capacity(count);
        for _ in 0..count {
            let len = match rng.gen_range(0..10) {
                0 => rng.gen_range(100..20_000),
                1..=3 => rng.gen_range(2..6),
                _ => 1,
            };
            runs.push(SerialRange {
                first: next,
                last: next + len - 1,
            });
            next += len
                + match rng.gen_range(0..10) {
                    0 => rng.gen_range(2_000..20_000),
                    1 => rng.gen_range(100..400),
                    _ => rng.gen_range(1..24),
                };
        }
        runs
    }

    #[test]
    fn plan_bytes_match_the_quadratic_optimum() {
        let mut rng = StdRng::seed_from_u64(0x5e67);
        for _ in 0..400 {
            let runs = random_runs(&mut rng);

            let mut written = Vec::new();
            put_serial_subsections(&mut written, &runs);

            assert_eq!(written.len() as u64, quadratic_optimum(&runs), "{runs:?}");
        }
    }

    #[test]
    fn plan_covers_every_run_once_in_order() {
        let mut rng = StdRng::seed_from_u64(0xc0de);
        for _ in 0..200 {
            let runs = random_runs(&mut rng);

            let mut next_run = 0;
            for segment in plan(&runs) {
                let covered = match segment {
                    Segment::List(covered) => covered,
                    Segment::Range(run) => run..run + 1,
                    Segment::Bitmap(covered) => {
                        let span = runs[covered.end - 1].last - runs[covered.start].first + 1;
                        assert!(span <= MAX_BITMAP_BITS);
                        covered
                    }
                };
                assert_eq!(covered.start, next_run);
                assert!(covered.end > covered.start);
                next_run = covered.end;
            }
            assert_eq!(next_run, runs.len());
        }
    }
}
