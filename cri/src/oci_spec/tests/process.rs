//! Args, env, cwd, user and oom_score_adj.

use super::*;

#[test]
fn args_follow_kubernetes_command_and_args_over_entrypoint_and_cmd() {
    // (command, args, image entrypoint, image cmd) -> process args
    let cases: &[(&[&str], &[&str], &[&str], &[&str], &[&str])] = &[
        (&[], &[], &["/ep"], &["c1"], &["/ep", "c1"]),
        (&[], &["a1"], &["/ep"], &["c1"], &["/ep", "a1"]),
        (&["/cmd"], &[], &["/ep"], &["c1"], &["/cmd"]),
        (
            &["/cmd"],
            &["a1", "a2"],
            &["/ep"],
            &["c1"],
            &["/cmd", "a1", "a2"],
        ),
        (
            &[],
            &[],
            &[],
            &["/bin/sh", "-c", "x"],
            &["/bin/sh", "-c", "x"],
        ),
        (&[], &["/bin/true"], &[], &["c1"], &["/bin/true"]),
        // Docker's `ENTRYPOINT [""]` resets the entrypoint.
        (&[], &[], &[""], &["c1"], &["c1"]),
    ];
    for (command, args, entrypoint, cmd, want) in cases {
        let mut fx = Fx::new();
        fx.container.command = strings(command);
        fx.container.args = strings(args);
        fx.image.entrypoint = strings(entrypoint);
        fx.image.cmd = strings(cmd);
        let spec = fx.spec();
        assert_eq!(
            process(&spec).args().clone().unwrap_or_default(),
            strings(want),
            "command {command:?} args {args:?} entrypoint {entrypoint:?} cmd {cmd:?}"
        );
    }
}

#[test]
fn no_command_anywhere_is_invalid_argument_naming_the_container() {
    let mut fx = Fx::new();
    fx.image.cmd.clear();
    let msg = fx.invalid();
    assert!(
        msg.contains("\"app\"") && msg.contains("no command specified"),
        "{msg}"
    );
}

#[test]
fn env_overlays_image_env_with_config_envs_by_key() {
    let mut fx = Fx::new();
    fx.image.env = strings(&["PATH=/app/bin", "LANG=C", "KEEP=1", "HOSTNAME=image"]);
    fx.container.envs = vec![
        api::KeyValue {
            key: "LANG".into(),
            value: b"C.UTF-8".to_vec(),
        },
        api::KeyValue {
            key: "NEW".into(),
            value: b"a=b".to_vec(),
        },
    ];
    fx.container.tty = true;
    let spec = fx.spec();
    assert_eq!(
        process(&spec).env().clone().unwrap_or_default(),
        strings(&[
            "PATH=/app/bin",
            "TERM=xterm",
            "HOSTNAME=image",
            "LANG=C.UTF-8",
            "KEEP=1",
            "NEW=a=b"
        ])
    );
    assert_eq!(process(&spec).terminal(), Some(true));
}

#[test]
fn env_has_default_path_and_sandbox_or_node_hostname() {
    let mut fx = Fx::new();
    let env = process(&fx.spec()).env().clone().unwrap_or_default();
    assert_eq!(
        env,
        strings(&[
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME=web"
        ])
    );
    // A host-network sandbox config has no hostname: the node's is used.
    fx.sandbox.hostname.clear();
    let env = process(&fx.spec()).env().clone().unwrap_or_default();
    assert!(env.contains(&"HOSTNAME=node-1".to_string()), "{env:?}");
}

#[test]
fn a_bare_key_unsets_the_variable() {
    let mut fx = Fx::new();
    fx.image.env = strings(&["A=1", "B=2", "A"]);
    let env = process(&fx.spec()).env().clone().unwrap_or_default();
    assert!(
        !env.iter().any(|e| e.starts_with("A=")) && env.contains(&"B=2".into()),
        "{env:?}"
    );
}

#[test]
fn cwd_is_config_then_image_then_root() {
    for (config, image, want) in [("/w", "/img", "/w"), ("", "/img", "/img"), ("", "", "/")] {
        let mut fx = Fx::new();
        fx.container.working_dir = config.into();
        fx.image.working_dir = image.into();
        assert_eq!(process(&fx.spec()).cwd(), Path::new(want));
    }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    # a comment\n\
    www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
    default-user:x:1000:1000::/home/default-user:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\n\
    wheel:x:10:root\n\
    www-data:x:33:www-data\n\
    tape:x:26:www-data,nobody\n\
    staff:x:50:\n\
    group-defined-in-image:x:50000:default-user\n";

#[derive(Default)]
struct UserCase {
    image_user: &'static str,
    run_as_user: Option<i64>,
    run_as_username: &'static str,
    run_as_group: Option<i64>,
    supplemental: &'static [i64],
    strict: bool,
    passwd: bool,
}

#[test]
fn user_resolution_table() {
    let with_files = |c: UserCase| UserCase { passwd: true, ..c };
    // case -> Ok((uid, gid, additional gids)) or Err(substring of the message)
    let cases: Vec<(UserCase, std::result::Result<(u32, u32, Vec<u32>), &str>)> = vec![
        (with_files(UserCase::default()), Ok((0, 0, vec![0, 10]))),
        (UserCase::default(), Ok((0, 0, vec![0]))),
        (
            with_files(UserCase {
                image_user: "33",
                ..Default::default()
            }),
            Ok((33, 33, vec![26, 33])),
        ),
        (
            with_files(UserCase {
                image_user: "1002",
                ..Default::default()
            }),
            Ok((1002, 0, vec![0])),
        ),
        (
            with_files(UserCase {
                image_user: "www-data",
                ..Default::default()
            }),
            Ok((33, 33, vec![26, 33])),
        ),
        (
            with_files(UserCase {
                image_user: "1003:1004",
                ..Default::default()
            }),
            Ok((1003, 1004, vec![1004])),
        ),
        (
            with_files(UserCase {
                image_user: "www-data:1004",
                ..Default::default()
            }),
            Ok((33, 1004, vec![26, 1004])),
        ),
        (
            with_files(UserCase {
                image_user: "33:staff",
                ..Default::default()
            }),
            Ok((33, 50, vec![26, 50])),
        ),
        (
            with_files(UserCase {
                image_user: "ghost",
                ..Default::default()
            }),
            Err("\"ghost\""),
        ),
        (
            UserCase {
                image_user: "www-data",
                ..Default::default()
            },
            Err("has none"),
        ),
        (
            with_files(UserCase {
                image_user: "33:ghosts",
                ..Default::default()
            }),
            Err("\"ghosts\""),
        ),
        (
            with_files(UserCase {
                image_user: "a:b:c",
                ..Default::default()
            }),
            Err("invalid user"),
        ),
        (
            with_files(UserCase {
                image_user: "4294967296",
                ..Default::default()
            }),
            Err("out of range"),
        ),
        // The security context wins over the image's USER.
        (
            with_files(UserCase {
                image_user: "www-data",
                run_as_user: Some(65534),
                ..Default::default()
            }),
            Ok((65534, 65534, vec![26, 65534])),
        ),
        (
            with_files(UserCase {
                run_as_user: Some(1000),
                run_as_group: Some(3000),
                ..Default::default()
            }),
            Ok((1000, 3000, vec![3000, 50000])),
        ),
        (
            with_files(UserCase {
                run_as_username: "www-data",
                run_as_user: Some(7),
                ..Default::default()
            }),
            Ok((33, 33, vec![26, 33])),
        ),
        (
            with_files(UserCase {
                run_as_username: "ghost",
                ..Default::default()
            }),
            Err("\"ghost\""),
        ),
        (
            with_files(UserCase {
                run_as_group: Some(5),
                ..Default::default()
            }),
            Err("run_as_group"),
        ),
        (
            with_files(UserCase {
                run_as_user: Some(-1),
                ..Default::default()
            }),
            Err("run_as_user -1"),
        ),
        (
            with_files(UserCase {
                run_as_user: Some(1000),
                supplemental: &[1234, 5],
                ..Default::default()
            }),
            Ok((1000, 1000, vec![5, 1000, 1234, 50000])),
        ),
        // Strict: no groups from the image's /etc/group.
        (
            with_files(UserCase {
                run_as_user: Some(33),
                supplemental: &[1234],
                strict: true,
                ..Default::default()
            }),
            Ok((33, 33, vec![33, 1234])),
        ),
    ];
    for (case, want) in cases {
        let mut fx = Fx::new();
        fx.image.user = case.image_user.into();
        if case.passwd {
            fx.passwd = Some(PASSWD.into());
            fx.group = Some(GROUP.into());
        }
        let sc = fx.sc();
        sc.run_as_user = case.run_as_user.map(|value| api::Int64Value { value });
        sc.run_as_group = case.run_as_group.map(|value| api::Int64Value { value });
        sc.run_as_username = case.run_as_username.into();
        sc.supplemental_groups = case.supplemental.to_vec();
        if case.strict {
            sc.supplemental_groups_policy = api::SupplementalGroupsPolicy::Strict as i32;
        }
        let label = format!(
            "image {:?} uid {:?} name {:?} gid {:?} passwd {}",
            case.image_user, case.run_as_user, case.run_as_username, case.run_as_group, case.passwd
        );
        match (fx.build(), want) {
            (Ok(spec), Ok((uid, gid, gids))) => {
                let u = process(&spec).user();
                assert_eq!(
                    (
                        u.uid(),
                        u.gid(),
                        u.additional_gids().clone().unwrap_or_default()
                    ),
                    (uid, gid, gids),
                    "{label}"
                );
            }
            (Err(CriError::InvalidArgument(msg)), Err(part)) => {
                assert!(
                    msg.contains(part) && msg.contains("\"app\""),
                    "{label}: {msg}"
                )
            }
            (got, want) => panic!("{label}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn critest_predefined_group_gives_id_g_1000_1234_50000() {
    let mut fx = Fx::new();
    fx.image.user = "1000".into();
    fx.passwd =
        Some("default-user:x:1000:1000:Default user:/home/default-user:/sbin/nologin\n".into());
    fx.group = Some("group-defined-in-image:x:50000:default-user\n".into());
    fx.sc().supplemental_groups = vec![1234];
    let spec = fx.spec();
    let u = process(&spec).user();
    assert_eq!((u.uid(), u.gid()), (1000, 1000));
    assert_eq!(
        u.additional_gids().clone().unwrap_or_default(),
        vec![1000, 1234, 50000]
    );
}

#[test]
fn oom_score_adj_is_never_below_the_agents() {
    // (requested, agent's) -> set
    for (requested, agent, want) in [
        (-998, -999, -998),
        (-999, -500, -500),
        (1000, 0, 1000),
        (0, 0, 0),
    ] {
        let mut fx = Fx::new();
        fx.min_oom_score_adj = agent;
        fx.resources().oom_score_adj = requested;
        assert_eq!(
            process(&fx.spec()).oom_score_adj(),
            Some(want),
            "{requested} with agent {agent}"
        );
    }
    let fx = Fx::new();
    assert_eq!(
        process(&fx.spec()).oom_score_adj(),
        None,
        "no resources, no oom_score_adj"
    );
    let mut fx = Fx::new();
    fx.resources().oom_score_adj = 1001;
    assert!(fx.invalid().contains("oom_score_adj"));
}

#[test]
fn no_new_privs_and_rlimits() {
    let mut fx = Fx::new();
    let spec = fx.spec();
    assert_eq!(process(&spec).no_new_privileges(), Some(false));
    assert_eq!(process(&spec).rlimits(), &None);
    fx.sc().no_new_privs = true;
    assert_eq!(process(&fx.spec()).no_new_privileges(), Some(true));
}

#[test]
fn image_defaults_come_from_the_config_object() {
    let cfg = serde_json::json!({
        "architecture": "amd64",
        "config": {
            "User": "www-data:1004",
            "Env": ["PATH=/bin", 7],
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "WorkingDir": "/srv",
            "StopSignal": "SIGQUIT"
        }
    });
    let d = image_defaults_from_config(&cfg);
    assert_eq!(
        d,
        ImageProcessDefaults {
            env: strings(&["PATH=/bin"]),
            entrypoint: strings(&["/docker-entrypoint.sh"]),
            cmd: strings(&["nginx", "-g", "daemon off;"]),
            working_dir: "/srv".into(),
            user: "www-data:1004".into(),
            stop_signal: "SIGQUIT".into(),
        }
    );
    assert_eq!(image_defaults_from_config(&cfg["config"]), d);
    assert_eq!(
        image_defaults_from_config(&serde_json::json!({"config": null})),
        ImageProcessDefaults::default()
    );
}
