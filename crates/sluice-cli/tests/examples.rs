//! The bundled `examples/*.sql` scripts run and produce what their comments promise.

mod common;

use common::{ok, read_part_files, Workspace};

fn workspace_with_examples() -> Workspace {
    let ws = Workspace::new();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for entry in walk(std::path::Path::new(examples)) {
        let relative = entry.strip_prefix(examples).expect("inside examples");
        let text = std::fs::read_to_string(&entry).expect("read example");
        ws.write(&format!("examples/{}", relative.display()), &text);
    }
    ws
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples dir").flatten() {
        if entry.path().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}

#[test]
fn nexmark_print_example_prints_expensive_bids() {
    let ws = workspace_with_examples();
    let out = ok(&ws.sluice(&["run", "examples/nexmark_print.sql"]));
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows.len() > 100, "{} rows", rows.len());
    assert!(rows.iter().all(|r| r.starts_with("+I[")), "{out}");
}

#[test]
fn orders_example_filters_and_dead_letters() {
    let ws = workspace_with_examples();
    ok(&ws.sluice(&["run", "examples/orders_filter.sql"]));
    let rows = read_part_files(&ws.path("sluice-data/orders_filter/out"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows[0].contains(r#""customer_name":"Ada","country":"GB","amount":120.50"#),
        "{rows:?}"
    );
    let dead = std::fs::read_to_string(ws.path("sluice-data/orders_filter/dead-letters.jsonl"))
        .expect("dlq");
    assert!(dead.contains("order_id"), "{dead}");
}

#[test]
fn stdin_example_prints_with_identifier() {
    let ws = workspace_with_examples();
    let out = ok(&ws.sluice_with_stdin(
        &["run", "examples/stdin_print.sql"],
        b"{\"user\":\"ann\",\"clicks\":3}\nnot json\n{\"user\":\"bob\",\"clicks\":0}\n",
    ));
    assert_eq!(out, "clicks> +I[ann, 3, true]\nclicks> +I[bob, 0, false]\n");
}
