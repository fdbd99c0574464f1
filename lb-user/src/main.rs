//! `pglb`: the control-plane binary.

fn main() -> anyhow::Result<()> {
    println!("pglb: object is {} bytes", lb_user::EBPF_OBJECT.len());
    Ok(())
}
