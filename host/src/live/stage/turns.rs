//! The stage's clock, five times a second: a slot that is over ends, the next DJ goes on
//! air when ready, and the fallback track plays while nobody is.

use super::{Applied, FALLBACK_RETRY, Fallback, HANDOVER_LATENESS_MS, Slot, Stage};
use crate::events::Event;

impl Stage {
    /// One look at the stage at `now`: slots that ended, the next DJ on air, places.
    pub(super) fn step(&self, now: u64) {
        let mut events = Vec::new();
        let mut kept = self.kept.lock();
        kept.blocked.retain(|_, until| *until > now);
        let connected: Vec<(String, u64)> = self.connected.lock().iter().map(|(d, c)| (d.clone(), c.session)).collect();
        let is_connected = |dj: &str| connected.iter().any(|(c, _)| c == dj);
        // A turn starts once the DJ's audio is decoded, so the whole slot is heard.
        let is_ready = |dj: &str| connected.iter().any(|(c, session)| c == dj && self.mount.is_ready(*session));
        let away_too_long = |dj: &str| {
            !is_connected(dj) && self.gone_since.lock().get(dj).is_none_or(|since| now >= since + self.grace_ms)
        };
        // A slot that ran out was handed over on the clock at its deadline: the next one
        // starts there, not when this look happens (unless that was long ago: a restart).
        let mut starts = now;
        if let Some(slot) = kept.slot.clone() {
            if now >= slot.deadline_ms {
                if now - slot.deadline_ms <= HANDOVER_LATENESS_MS {
                    starts = slot.deadline_ms;
                }
                self.off_air(&mut kept, &slot.dj, "slot_over", true, now, &mut events);
            } else if away_too_long(&slot.dj) {
                self.off_air(&mut kept, &slot.dj, "gone", false, now, &mut events);
            } else if !slot.warned && now + kept.settings.warning_secs * 1000 >= slot.deadline_ms {
                if let Some(s) = kept.slot.as_mut() {
                    s.warned = true;
                }
                let remaining_secs = (slot.deadline_ms - now).div_ceil(1000);
                events.push(Event::SlotWarning { stage: self.name.clone(), dj: slot.dj.clone(), remaining_secs });
            }
        }
        let on_air = kept.slot.as_ref().map(|s| s.dj.clone());
        kept.queue.retain(|dj| Some(dj) == on_air.as_ref() || !away_too_long(dj));
        if kept.slot.is_none()
            && let Some(next) = kept.queue.iter().find(|d| is_ready(d)).cloned()
        {
            kept.queue.retain(|d| *d != next);
            kept.queue.insert(0, next.clone());
            let deadline_ms = starts + kept.settings.slot_secs * 1000;
            kept.slot = Some(Slot { dj: next.clone(), deadline_ms, warned: false });
            events.push(Event::OnAir { stage: self.name.clone(), dj: next, deadline_ms });
        }
        let on_air = kept.slot.as_ref().map(|s| s.dj.clone());
        let waiting: Vec<String> = kept.queue.iter().filter(|d| Some(*d) != on_air.as_ref()).cloned().collect();
        let next = waiting.iter().find(|d| is_ready(d)).cloned();
        let mut announced = self.announced.lock();
        for (place, dj) in waiting.iter().enumerate() {
            if announced.get(place) != Some(dj) {
                events.push(Event::StageQueued { stage: self.name.clone(), dj: dj.clone(), place: place + 1 });
            }
        }
        self.services.waiting.set(waiting.len() as i64);
        *announced = waiting;
        drop(announced);
        self.apply(kept.slot.as_ref(), next.as_deref(), now);
        let fallback = if kept.slot.is_none() { kept.settings.fallback.clone() } else { Vec::new() };
        drop(kept);
        self.keep_fallback(&fallback);
        for event in events {
            self.services.events.emit(event);
        }
    }

    /// Puts the slot's DJ on air on the packet clock, cut at its deadline's tick, when `next`
    /// takes over.
    pub(super) fn apply(&self, slot: Option<&Slot>, next: Option<&str>, now: u64) {
        let connected = self.connected.lock();
        let session = slot.and_then(|s| connected.get(&s.dj).map(|c| c.session));
        let next = next.and_then(|dj| connected.get(dj).map(|c| c.session));
        drop(connected);
        let now_applied = Applied { session, deadline_ms: slot.map_or(0, |s| s.deadline_ms), next };
        let mut applied = self.applied.lock();
        if *applied == Some(now_applied) {
            return;
        }
        *applied = Some(now_applied);
        let until = slot.map(|s| self.services.scheduler.now_tick() + s.deadline_ms.saturating_sub(now) / 20);
        self.mount.put_on_air(session, until, next);
    }

    /// Plays the fallback list, one track after another, while nobody is on air (`list` is
    /// empty then otherwise); stops it when someone is.
    pub(super) fn keep_fallback(&self, list: &[String]) {
        let mut fallback = self.fallback.lock();
        if list.is_empty() {
            *fallback = None;
            self.mount.set_fallback(None);
            return;
        }
        let playing = fallback.as_ref().is_some_and(|f| self.mount.is_connected(f.session.id()));
        if playing || fallback.as_ref().is_some_and(|f| f.started.elapsed() < FALLBACK_RETRY) {
            return;
        }
        // None yet, or the last one ended: the next in the list.
        use std::sync::atomic::Ordering;
        let index = self.fallback_next.fetch_add(1, Ordering::Relaxed) % list.len();
        let frames = (self.services.play)(&list[index]);
        let (session, _) = self.mount.connect(frames, None, None, false);
        self.mount.set_fallback(Some(session.id()));
        *fallback = Some(Fallback { session, started: std::time::Instant::now() });
    }
}
