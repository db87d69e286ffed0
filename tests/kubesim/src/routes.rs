//! Where port-forwards to a pod port really connect: a TCP address per pod port, or per port of
//! every pod of a StatefulSet (present and future, recreated pods included).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;

use serde_json::Value;

use crate::meta;

/// What a route names: one pod, or every pod a StatefulSet owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    Pod(String),
    StatefulSet(String),
}

/// `NAMESPACE/POD:PORT=HOST:PORT` or `NAMESPACE/sts/NAME:PORT=HOST:PORT`: connections to the
/// container port `port` of the target go to `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRoute {
    pub namespace: String,
    pub target: RouteTarget,
    pub port: u16,
    pub addr: SocketAddr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("route {0:?}: expected NAMESPACE/POD:PORT=HOST:PORT (POD may be sts/NAME)")]
    Shape(String),
    #[error("route {route:?}: {what} {value:?} is not a port number (1-65535)")]
    Port {
        route: String,
        what: &'static str,
        value: String,
    },
    #[error("route {route:?}: {value:?} is not HOST:PORT with an IP address or localhost as HOST")]
    Address { route: String, value: String },
}

fn port(route: &str, what: &'static str, value: &str) -> Result<u16, RouteError> {
    value
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| RouteError::Port {
            route: route.to_string(),
            what,
            value: value.to_string(),
        })
}

fn address(route: &str, value: &str) -> Result<SocketAddr, RouteError> {
    let bad = || RouteError::Address {
        route: route.to_string(),
        value: value.to_string(),
    };
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, p) = value.rsplit_once(':').ok_or_else(bad)?;
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => host.parse().map_err(|_| bad())?,
    };
    Ok(SocketAddr::new(ip, port(route, "host port", p)?))
}

impl FromStr for PortRoute {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || RouteError::Shape(s.to_string());
        let (left, right) = s.split_once('=').ok_or_else(shape)?;
        let (path, pod_port) = left.rsplit_once(':').ok_or_else(shape)?;
        let (namespace, pod) = path.split_once('/').ok_or_else(shape)?;
        let target = match pod.split_once('/') {
            None => RouteTarget::Pod(pod.to_string()),
            Some(("sts" | "statefulset", name)) => RouteTarget::StatefulSet(name.to_string()),
            Some(_) => return Err(shape()),
        };
        let name = match &target {
            RouteTarget::Pod(n) | RouteTarget::StatefulSet(n) => n,
        };
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(shape());
        }
        Ok(PortRoute {
            namespace: namespace.to_string(),
            target,
            port: port(s, "pod port", pod_port)?,
            addr: address(s, right)?,
        })
    }
}

impl fmt::Display for PortRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ns, port, addr) = (&self.namespace, self.port, self.addr);
        match &self.target {
            RouteTarget::Pod(pod) => write!(f, "{ns}/{pod}:{port}={addr}"),
            RouteTarget::StatefulSet(sts) => write!(f, "{ns}/sts/{sts}:{port}={addr}"),
        }
    }
}

type Key = (String, RouteTarget, u16);

/// The registered routes.
#[derive(Debug, Default)]
pub(crate) struct Routes(Mutex<HashMap<Key, SocketAddr>>);

impl Routes {
    pub fn add(&self, route: &PortRoute) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (route.namespace.clone(), route.target.clone(), route.port),
            route.addr,
        );
    }

    /// Where `port` of `pod` goes: the pod's own route, else its StatefulSet's.
    pub fn target(&self, pod: &Value, port: u16) -> Option<SocketAddr> {
        let ns = meta::namespace(pod).to_string();
        let routes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let own = (
            ns.clone(),
            RouteTarget::Pod(meta::name(pod).to_string()),
            port,
        );
        if let Some(addr) = routes.get(&own) {
            return Some(*addr);
        }
        let owner = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)?
            .iter()
            .find(|r| {
                r.get("controller") == Some(&Value::Bool(true))
                    && meta::str_at(r, &["kind"]) == Some("StatefulSet")
            })?;
        let sts = meta::str_at(owner, &["name"])?.to_string();
        routes
            .get(&(ns, RouteTarget::StatefulSet(sts), port))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let r: PortRoute = "ops/hivemq-0:8888=127.0.0.1:9000".parse().unwrap();
        assert_eq!(r.target, RouteTarget::Pod("hivemq-0".into()));
        assert_eq!((r.namespace.as_str(), r.port), ("ops", 8888));
        assert_eq!(r.addr, "127.0.0.1:9000".parse().unwrap());
        let r: PortRoute = "ops/sts/hivemq:8888=localhost:9000".parse().unwrap();
        assert_eq!(r.target, RouteTarget::StatefulSet("hivemq".into()));
        assert_eq!(r.to_string(), "ops/sts/hivemq:8888=127.0.0.1:9000");
        let r: PortRoute = "ops/p:1=[::1]:2".parse().unwrap();
        assert_eq!(r.addr, "[::1]:2".parse().unwrap());
    }

    #[test]
    fn malformed_routes_say_what_is_wrong() {
        for (route, want) in [
            ("ops/p:8888", "expected NAMESPACE/POD:PORT=HOST:PORT"),
            (
                "p:8888=127.0.0.1:1",
                "expected NAMESPACE/POD:PORT=HOST:PORT",
            ),
            (
                "ops/deploy/x:1=127.0.0.1:1",
                "expected NAMESPACE/POD:PORT=HOST:PORT",
            ),
            (
                "ops/:1=127.0.0.1:1",
                "expected NAMESPACE/POD:PORT=HOST:PORT",
            ),
            (
                "ops/p:http=127.0.0.1:1",
                "pod port \"http\" is not a port number",
            ),
            ("ops/p:0=127.0.0.1:1", "pod port \"0\" is not a port number"),
            (
                "ops/p:1=example.com:1",
                "\"example.com:1\" is not HOST:PORT",
            ),
            (
                "ops/p:1=127.0.0.1:99999",
                "host port \"99999\" is not a port number",
            ),
        ] {
            let err = route.parse::<PortRoute>().unwrap_err().to_string();
            assert!(err.contains(want), "{route}: {err}");
        }
    }

    #[test]
    fn statefulset_routes_reach_its_pods() {
        let routes = Routes::default();
        routes.add(&"ops/sts/mq:8888=127.0.0.1:9000".parse().unwrap());
        routes.add(&"ops/mq-1:8888=127.0.0.1:9001".parse().unwrap());
        let pod = |name: &str, owner: &str| {
            serde_json::json!({"metadata": {"name": name, "namespace": "ops", "ownerReferences":
                [{"kind": "StatefulSet", "name": owner, "controller": true}]}})
        };
        assert_eq!(
            routes.target(&pod("mq-0", "mq"), 8888),
            Some("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            routes.target(&pod("mq-1", "mq"), 8888),
            Some("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(routes.target(&pod("mq-0", "mq"), 8000), None);
        assert_eq!(routes.target(&pod("other-0", "other"), 8888), None);
    }
}
