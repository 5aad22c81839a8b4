//! Helper for the compiler measurements (notes/compiler.md), not part of
//! the suite: writes a magnitude-pruned and a binarized variant of a card
//! so that the sparse and binary kernels can be timed on a real network.
//!
//! CARDC_MEASURE_CARD=run/resnet20.card CARDC_MEASURE_OUT=/tmp/m \
//!   cargo test --test compile_measure -- --ignored
//!
//! Without fine-tuning the variants lose accuracy (binarized: most of it);
//! they measure speed and artifact/reference agreement, not quality.

use cardc::card::Card;
use cardc::model::WeightState;
use std::path::PathBuf;

#[test]
#[ignore]
fn write_sparse_and_binary_variants() {
    let (Ok(src), Ok(out)) = (
        std::env::var("CARDC_MEASURE_CARD"),
        std::env::var("CARDC_MEASURE_OUT"),
    ) else {
        eprintln!("set CARDC_MEASURE_CARD and CARDC_MEASURE_OUT");
        return;
    };
    let card = Card::load(&PathBuf::from(&src)).unwrap();
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    // Layerwise 90% magnitude pruning; first conv and classifier stay dense.
    let mut sparse = card.clone();
    let prunable = sparse.model.prunable();
    let last = prunable.len() - 1;
    for (n, &(i, k)) in prunable.iter().enumerate() {
        if n == 0 || n == last {
            continue;
        }
        let t = &mut sparse.model.params[i][k];
        let mut mags: Vec<f32> = t.data.iter().map(|v| v.abs()).collect();
        mags.sort_by(f32::total_cmp);
        let cut = mags[(mags.len() * 9) / 10];
        let mask = t.data.iter().map(|v| v.abs() >= cut).collect();
        t.state = WeightState::Masked { mask };
        t.apply_mask();
    }
    sparse.provenance.method = "magnitude-90 (measurement helper)".into();
    sparse.save(&out.join("sparse90.card")).unwrap();
    // Sign binarization with α = mean |w| per layer, all weights kept.
    let mut binary = card.clone();
    for (n, &(i, k)) in binary.model.prunable().iter().enumerate() {
        if n == 0 || n == last {
            continue;
        }
        let t = &mut binary.model.params[i][k];
        let alpha = t.data.iter().map(|v| v.abs()).sum::<f32>() / t.data.len() as f32;
        t.state = WeightState::Binary {
            mask: vec![true; t.data.len()],
            alpha,
        };
    }
    binary.provenance.method = "sign-binarized (measurement helper)".into();
    binary.save(&out.join("binary.card")).unwrap();
}
