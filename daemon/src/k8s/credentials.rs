//! Exec credential plugins (`gke-gcloud-auth-plugin`, `kubelogin`, `aws eks get-token`) as a
//! daemon meets them: no terminal, stdin at /dev/null, and under systemd a short PATH. Their
//! failures become one line naming the plugin and what to do, never a bare EIO.

use std::io::IsTerminal;
use std::path::Path;

use kube::client::AuthError;
use kube::config::{ExecConfig, ExecInteractiveMode, Kubeconfig};

/// The exec plugin the user of `context` gets its credentials from, if any.
pub fn plugin_of<'a>(kubeconfig: &'a Kubeconfig, context: &str) -> Option<&'a ExecConfig> {
    let user = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .user
        .as_deref()?;
    kubeconfig
        .auth_infos
        .iter()
        .find(|a| a.name == user)?
        .auth_info
        .as_ref()?
        .exec
        .as_ref()
}

/// Why a plugin cannot be run by the daemon before trying: one that always wants a terminal
/// finds none (kubectl refuses it the same way).
pub fn refuse(context: &str, exec: &ExecConfig) -> Option<String> {
    let always = exec.interactive_mode == Some(ExecInteractiveMode::Always);
    (always && !std::io::stdin().is_terminal()).then(|| {
        format!(
            "context {context}: the credential plugin {} needs a terminal (interactiveMode: Always) and the daemon has none: {}",
            name(exec),
            log_in(context)
        )
    })
}

/// One line for a context whose client could not be made.
pub fn explain(context: &str, exec: Option<&ExecConfig>, e: &kube::Error) -> String {
    match (e, exec) {
        (kube::Error::Auth(auth), Some(exec)) => plugin_failure(context, exec, auth),
        (kube::Error::Auth(auth), None) => {
            format!("context {context}: credentials: {}", line(auth))
        }
        (other, _) => format!("context {context}: {other}"),
    }
}

fn plugin_failure(context: &str, exec: &ExecConfig, e: &AuthError) -> String {
    let plugin = name(exec);
    match e {
        AuthError::AuthExecStart(io) if io.kind() == std::io::ErrorKind::NotFound => {
            let path = std::env::var("PATH").unwrap_or_default();
            let hint = exec
                .install_hint
                .as_deref()
                .map(|h| h.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| install(&plugin));
            format!(
                "context {context}: the credential plugin {plugin} is not found on the daemon's PATH ({path}): {hint}; if it is installed, give its full path as `command` in the kubeconfig, or add its folder to the PATH snapfsd starts with (systemd user services get a short one)"
            )
        }
        AuthError::AuthExecRun { out, .. } => {
            let said = last_line(&out.stderr).or_else(|| last_line(&out.stdout));
            let said = said.map(|s| format!(": {s}")).unwrap_or_default();
            format!(
                "context {context}: the credential plugin {plugin} failed ({}){said}; {}",
                out.status,
                log_in(context)
            )
        }
        other => format!(
            "context {context}: the credential plugin {plugin}: {}; {}",
            line(other),
            log_in(context)
        ),
    }
}

/// An auth error in one line, without the Debug dump of a plugin's output.
pub fn line(e: &AuthError) -> String {
    match e {
        AuthError::AuthExecRun { out, .. } => {
            let said = last_line(&out.stderr)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("the credential plugin failed ({}){said}", out.status)
        }
        other => other.to_string(),
    }
}

fn log_in(context: &str) -> String {
    format!(
        "run `kubectl get ns --context {context}` once in a terminal to log in, then mount again"
    )
}

/// The plugin's file name, as a user knows it.
fn name(exec: &ExecConfig) -> String {
    let command = exec.command.as_deref().unwrap_or("(no command)");
    Path::new(command)
        .file_name()
        .map_or(command.to_string(), |n| n.to_string_lossy().into_owned())
}

/// What to install for a plugin the kubeconfig gives no `installHint` for.
fn install(plugin: &str) -> String {
    match plugin {
        "gke-gcloud-auth-plugin" => {
            "install it (`gcloud components install gke-gcloud-auth-plugin`, or the google-cloud-cli-gke-gcloud-auth-plugin package)".into()
        }
        "aws" => "install the AWS CLI v2".into(),
        "aws-iam-authenticator" => "install aws-iam-authenticator".into(),
        "kubelogin" => "install kubelogin (`az aks install-cli`)".into(),
        "kubectl" => "install kubectl and the plugin it runs".into(),
        other => format!("install {other}"),
    }
}

/// The last non-empty line a plugin printed, shortened for a log line.
fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(line.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exec(command: &str, hint: Option<&str>) -> ExecConfig {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": command,
            "installHint": hint,
        }))
        .unwrap()
    }

    #[test]
    fn a_missing_plugin_says_what_to_install() {
        let e = kube::Error::Auth(AuthError::AuthExecStart(
            std::io::ErrorKind::NotFound.into(),
        ));
        let m = explain("gke_p_z_c", Some(&exec("gke-gcloud-auth-plugin", None)), &e);
        assert!(m.starts_with("context gke_p_z_c: the credential plugin gke-gcloud-auth-plugin is not found on the daemon's PATH"), "{m}");
        assert!(
            m.contains("gcloud components install gke-gcloud-auth-plugin"),
            "{m}"
        );
        let m = explain(
            "eks",
            Some(&exec("aws", Some("Install the\n  AWS CLI"))),
            &e,
        );
        assert!(m.contains(": Install the AWS CLI;"), "{m}");
        assert!(!m.contains('\n'));
    }

    #[test]
    fn a_failing_plugin_says_how_to_log_in() {
        let out = std::process::Output {
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout: Vec::new(),
            stderr: b"starting\nerror: not logged in\n\n".to_vec(),
        };
        let e = kube::Error::Auth(AuthError::AuthExecRun {
            cmd: "\"/usr/bin/kubelogin\" \"get-token\"".into(),
            out: Box::new(out),
        });
        let m = explain("aks", Some(&exec("/usr/bin/kubelogin", None)), &e);
        assert_eq!(
            m,
            "context aks: the credential plugin kubelogin failed (exit status: 1): error: not logged in; run `kubectl get ns --context aks` once in a terminal to log in, then mount again"
        );
        let kube::Error::Auth(auth) = &e else {
            unreachable!()
        };
        assert_eq!(
            line(auth),
            "the credential plugin failed (exit status: 1): error: not logged in"
        );
    }

    #[test]
    fn plugins_are_found_by_context_and_terminals_asked_for() {
        let k = Kubeconfig::from_yaml(
            "contexts:\n- name: c\n  context: {cluster: x, user: u}\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: kubelogin\n      interactiveMode: Always\n",
        )
        .unwrap();
        let e = plugin_of(&k, "c").unwrap();
        assert_eq!(e.command.as_deref(), Some("kubelogin"));
        assert!(plugin_of(&k, "other").is_none());
        // Tests run without a terminal on stdin, as the daemon does.
        if !std::io::stdin().is_terminal() {
            let m = refuse("c", e).unwrap();
            assert!(m.contains("needs a terminal"), "{m}");
        }
        assert!(refuse("c", &exec("kubelogin", None)).is_none());
    }
}
