//! Lavalink's filter set with its field names and ranges, plus loudness normalization, as
//! one filter component.

mesastream_dsp::filter_component!(
    "equalizer",
    "karaoke",
    "timescale",
    "tremolo",
    "vibrato",
    "rotation",
    "distortion",
    "channelMix",
    "lowPass",
    "normalization",
);
