//! Story: a configuration written by a program (JSON escapes make it easy) names a path with a
//! NUL byte in it — no system call can take such a path. `baton check` and `baton serve` agree:
//! both refuse it in one line naming the field, exit 78, and nothing is bound.

mod common;

use common::{procs, Sandbox};

#[test]
fn a_path_with_a_nul_byte_is_refused_alike_by_check_and_serve() {
    let sb = Sandbox::new();
    let dir = sb.dir().display().to_string();
    let cases: [(&str, String, &str); 5] = [
        (
            "pid_file",
            format!(r#""pid_file": "{dir}/baton\u0000.pid""#),
            "pid_file",
        ),
        (
            "handoff_socket",
            format!(r#""handoff_socket": "{dir}/run\u0000/handoff.sock""#),
            "handoff_socket",
        ),
        (
            "tls_cert",
            format!(r#""tls_cert": "{dir}/cert\u0000.pem", "tls_key": "{dir}/key.pem""#),
            "tls_cert",
        ),
        (
            "tls_key",
            format!(r#""tls_cert": "{dir}/cert.pem", "tls_key": "{dir}/key\u0000.pem""#),
            "tls_key",
        ),
        (
            "a unix listener",
            format!(r#""listen": ["unix:{dir}/api\u0000.sock"]"#),
            "listen[0]",
        ),
    ];
    for (what, field_json, field) in cases {
        let listen = if field_json.contains("\"listen\"") {
            String::new()
        } else {
            format!(r#""listen": ["{}"], "#, sb.listen())
        };
        sb.write_config_text(&format!("{{{listen}{field_json}}}"));
        let expected = format!("config {}: {field}: ", sb.config_path().display());

        let (err, _, _) = common::refused_alike_by_check_and_serve(
            &sb,
            &expected,
            "NUL byte",
            &format!("NUL in {what}"),
        );
        println!("NUL in {what}: check and serve exit 78: {err}");
    }
    assert!(procs::listening_inodes_on_port(sb.port).is_empty());
}
