//! mesastream's 3-band equalizer (bass, mid, treble multipliers 0–2) as a filter component;
//! the `/players/{id}/equalizer` route drives it.

mesastream_dsp::filter_component!("threeBandEqualizer");
