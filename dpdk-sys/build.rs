//! Generates the DPDK bindings against the system's DPDK at build time (never checked in,
//! never edited by hand) and compiles the C shim for DPDK's static-inline functions.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");
    let dpdk = match pkg_config::Config::new().atleast_version("22.11").cargo_metadata(false).probe("libdpdk") {
        Ok(library) => library,
        Err(error) => {
            let text = error.to_string();
            let reason =
                text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("no libdpdk.pc").to_owned();
            eprintln!(
                "error: DPDK >= 22.11 not found through pkg-config libdpdk ({reason}); install it with \
                 `apt-get install dpdk-dev libdpdk-dev libclang-dev`, or build without the `dpdk` feature"
            );
            std::process::exit(1);
        }
    };
    // Link only what the shim and the backend call; the EAL loads PMDs by itself.
    for library in ["rte_eal", "rte_ethdev", "rte_mbuf", "rte_mempool", "rte_net", "rte_kvargs"] {
        println!("cargo:rustc-link-lib=dylib={library}");
    }
    for path in &dpdk.link_paths {
        println!("cargo:rustc-link-search=native={}", path.display());
    }

    let mut shim = cc::Build::new();
    shim.file("shim/shim.c").warnings(true).flag_if_supported("-Wno-unused-parameter");
    for path in &dpdk.include_paths {
        shim.include(path);
    }
    // DPDK's headers need rte_config.h first and, on x86, the SSE4.2 baseline it was built for.
    shim.flag("-include").flag("rte_config.h");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        shim.flag("-msse4.2");
    }
    shim.compile("beeline_dpdk_shim");

    let mut builder = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_arg("-include")
        .clang_arg("rte_config.h")
        .allowlist_function("rte_.*")
        .allowlist_function("beeline_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        // Packed structs that contain aligned ones cannot be laid out by Rust.
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_gtp_.*")
        .opaque_type("rte_l2tpv2_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        builder = builder.clang_arg("-msse4.2");
    }
    for path in &dpdk.include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    let bindings = builder.generate().unwrap_or_else(|error| {
        eprintln!("error: bindgen could not read DPDK's headers ({error}); install libclang-dev");
        std::process::exit(1);
    });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings.write_to_file(out.join("bindings.rs")).expect("OUT_DIR is writable");
}
