//! tlog-tiles: tile paths (parse and print back) and the root of a tree computed from tiles a
//! client fetched from the public store (first 8 bytes: tree size; the rest: tile contents,
//! each tile taking the next bytes).
#![no_main]

use fuzzkit::text_round_trip;
use keyring::{root_from_tiles, TileId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = text_round_trip(data, false, TileId::parse_path, |t| {
        let p = t.path();
        if std::str::from_utf8(data).is_ok_and(|s| s.starts_with("tile/")) {
            p
        } else {
            p.trim_start_matches("tile/").to_owned()
        }
    });
    let Some((size, mut rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    // Small trees only: the edge of a u64 tree is at most 8 tiles either way, and a huge size
    // just asks for tiles the input does not hold.
    let size = u64::from_be_bytes(*size);
    let _ = root_from_tiles(size, |id| {
        let want = usize::from(id.width) * 32;
        // Let the input end early, to exercise short and missing tiles.
        let take = want.min(rest.len());
        let (tile, tail) = rest.split_at(take);
        rest = tail;
        (!tile.is_empty()).then(|| tile.to_vec())
    });
});
