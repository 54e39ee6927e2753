"""Dependency injection: providers, scopes, per-request controllers, and build-time errors."""

from __future__ import annotations

import gc
import itertools
import os

import pytest

from workflowhttp import (
    App,
    ConfigurationError,
    HttpEvent,
    Provider,
    Request,
    http,
    http_workflow,
    listener,
)
from workflowhttp.testing import TestClient

# -- services ----------------------------------------------------------------------------------


class Settings:
    def __init__(self) -> None:
        self.greeting = "hello"


class Store:
    """A singleton that depends on another service by type."""

    built = 0

    def __init__(self, settings: Settings) -> None:
        type(self).built += 1
        self.settings = settings
        self.items: list[str] = []


class Unit:
    """A request-scoped unit of work; numbered so tests can tell instances apart."""

    counter = itertools.count(1)

    def __init__(self) -> None:
        self.number = next(self.counter)


class Counted:
    built = 0

    def __init__(self) -> None:
        type(self).built += 1


class Greeter:
    def __init__(self, text: str) -> None:
        self.text = text


class Repository:
    def name(self) -> str:
        return "abstract"


class MemoryRepository(Repository):
    def name(self) -> str:
        return "memory"


class HttpClient:
    def __init__(self, settings: Settings, timeout: float = 2.0) -> None:
        self.timeout = timeout


class Consumer:
    def __init__(self, unit: Unit) -> None:
        self.unit = unit


class CurrentUser:
    def __init__(self, name: str) -> None:
        self.name = name


class Locale:
    def __init__(self, tag: str) -> None:
        self.tag = tag


class Session:
    def __init__(self, store: Store) -> None:
        self.store = store


class Mailer:
    pass


class Fragile:
    pass


class CycleA:
    def __init__(self, b: CycleB) -> None:
        self.b = b


class CycleB:
    def __init__(self, a: CycleA) -> None:
        self.a = a


class Selfish:
    def __init__(self, me: Selfish) -> None:
        self.me = me


# -- providing ---------------------------------------------------------------------------------


def test_class_provider_with_constructor_dependencies():
    @http.GET("/x")
    def x(store: Store) -> dict:
        return {"greeting": store.settings.greeting}

    app = App(controllers=[x], providers=[Store, Settings])
    assert TestClient(app).get("/x").json == {"greeting": "hello"}


def test_singletons_are_built_on_first_use_and_shared_across_requests():
    @http.GET("/x")
    def x(counted: Counted, settings: Settings) -> dict:
        return {"counted": id(counted), "settings": id(settings)}

    Counted.built = 0
    app = App(controllers=[x], providers=[Counted, Settings])
    assert Counted.built == 0
    client = TestClient(app)
    first = client.get("/x").json
    second = client.get("/x").json
    assert first == second
    assert Counted.built == 1


def test_each_app_has_its_own_singletons():
    @http.GET("/x")
    def x(settings: Settings) -> dict:
        return {"id": id(settings)}

    first = TestClient(App(controllers=[x], providers=[Settings])).get("/x").json
    second = TestClient(App(controllers=[x], providers=[Settings])).get("/x").json
    assert first != second


def test_instance_provider():
    settings = Settings()
    settings.greeting = "hi"

    @http.GET("/x")
    def x(given: Settings) -> dict:
        return {"same": given is settings, "greeting": given.greeting}

    app = App(controllers=[x], providers=[settings])
    assert TestClient(app).get("/x").json == {"same": True, "greeting": "hi"}


def test_factory_provider_with_injected_parameters():
    def make_greeter(settings: Settings) -> Greeter:
        return Greeter(settings.greeting.upper())

    @http.GET("/x")
    def x(greeter: Greeter) -> str:
        return greeter.text

    app = App(controllers=[x], providers=[make_greeter, Settings])
    assert TestClient(app).get("/x").text == "HELLO"


def test_factory_provider_is_a_singleton_by_default():
    calls = []

    def make_settings() -> Settings:
        calls.append(1)
        return Settings()

    @http.GET("/x")
    def x(settings: Settings) -> dict:
        return {"id": id(settings)}

    client = TestClient(App(controllers=[x], providers=[make_settings]))
    assert client.get("/x").json == client.get("/x").json
    assert calls == [1]


def test_factory_without_a_return_annotation_is_a_configuration_error():
    def make():
        return Settings()

    with pytest.raises(ConfigurationError, match="return annotation"):
        App(controllers=[], providers=[make])


def test_provider_maps_an_interface_to_an_implementation():
    @http.GET("/x")
    def x(repository: Repository) -> str:
        return repository.name()

    app = App(controllers=[x], providers=[Provider(Repository, MemoryRepository)])
    assert TestClient(app).get("/x").text == "memory"


def test_provider_with_an_instance():
    instance = MemoryRepository()

    @http.GET("/x")
    def x(repository: Repository) -> dict:
        return {"same": repository is instance, "name": repository.name()}

    app = App(controllers=[x], providers=[Provider(Repository, instance)])
    assert TestClient(app).get("/x").json == {"same": True, "name": "memory"}


def test_provider_with_a_factory():
    def make() -> Settings:
        settings = Settings()
        settings.greeting = "made"
        return settings

    @http.GET("/x")
    def x(settings: Settings) -> str:
        return settings.greeting

    app = App(controllers=[x], providers=[Provider(Settings, make)])
    assert TestClient(app).get("/x").text == "made"


def test_provider_with_an_unknown_scope_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="scope"):
        Provider(Settings, scope="session")


def test_optional_constructor_parameters_without_a_provider_keep_their_default():
    @http.GET("/x")
    def x(client: HttpClient) -> dict:
        return {"timeout": client.timeout}

    app = App(controllers=[x], providers=[HttpClient, Settings])
    assert TestClient(app).get("/x").json == {"timeout": 2.0}


# -- request scope -----------------------------------------------------------------------------


def test_request_scoped_service_is_new_per_request():
    @http.GET("/x")
    def x(unit: Unit) -> dict:
        return {"unit": unit.number}

    app = App(controllers=[x], providers=[Provider(Unit, scope="request")])
    client = TestClient(app)
    first = client.get("/x").json["unit"]
    second = client.get("/x").json["unit"]
    assert second == first + 1


def test_request_scoped_service_is_shared_within_one_request():
    @http.controller("/c")
    class Controller:
        def __init__(self, unit: Unit, consumer: Consumer) -> None:
            self.unit = unit
            self.consumer = consumer

        @http.GET("/")
        def show(self, unit: Unit, event: HttpEvent) -> dict:
            return {
                "ctor": self.unit.number,
                "param": unit.number,
                "nested": self.consumer.unit.number,
                "listener": event.store["unit"],
            }

    app = App(
        controllers=[Controller],
        providers=[Provider(Unit, scope="request"), Provider(Consumer, scope="request")],
    )

    @app.listen(http_workflow.on_controller)
    def remember(event: HttpEvent) -> None:
        event.store["unit"] = event.parameters["unit"].number

    client = TestClient(app)
    first = client.get("/c").json
    assert len(set(first.values())) == 1
    second = client.get("/c").json
    assert len(set(second.values())) == 1
    assert second["param"] != first["param"]


def test_request_scoped_service_seen_by_a_listener_after_the_controller():
    seen = []

    @http.GET("/x")
    def x(unit: Unit) -> dict:
        return {"unit": unit.number}

    app = App(controllers=[x], providers=[Provider(Unit, scope="request")])

    @app.listen(http_workflow.on_response)
    def after(event: HttpEvent) -> None:
        seen.append(event.parameters["unit"].number)

    body = TestClient(app).get("/x").json
    assert seen == [body["unit"]]


def test_request_scoped_factory_taking_the_event():
    def current_user(event: HttpEvent) -> CurrentUser:
        return CurrentUser(event.store.get("user", "anonymous"))

    @http.GET("/me")
    def me(user: CurrentUser) -> str:
        return user.name

    app = App(controllers=[me], providers=[Provider(CurrentUser, current_user, scope="request")])

    @app.listen(http_workflow.on_auth)
    def authenticate(event: HttpEvent) -> None:
        token = event.request.headers.get("Authorization")
        if token:
            event.store["user"] = token.removeprefix("Bearer ")

    client = TestClient(app)
    assert client.get("/me", headers={"Authorization": "Bearer ann"}).text == "ann"
    assert client.get("/me").text == "anonymous"


def test_request_scoped_factory_taking_the_request():
    def locale(request: Request) -> Locale:
        return Locale(request.accept_languages.best or "en")

    @http.GET("/locale")
    def show(locale: Locale) -> str:
        return locale.tag

    app = App(controllers=[show], providers=[Provider(Locale, locale, scope="request")])
    client = TestClient(app)
    assert client.get("/locale", headers={"Accept-Language": "fr-CH, fr;q=0.9"}).text == "fr-CH"
    assert client.get("/locale").text == "en"


def test_request_scoped_class_depending_on_a_singleton():
    @http.GET("/x")
    def x(session: Session, store: Store) -> dict:
        return {"same": session.store is store}

    app = App(controllers=[x], providers=[Provider(Session, scope="request"), Store, Settings])
    assert TestClient(app).get("/x").json == {"same": True}


# -- controllers and listeners ----------------------------------------------------------------


def test_controller_classes_are_instantiated_per_request():
    @http.controller("/count")
    class Counter:
        def __init__(self, settings: Settings) -> None:
            self.settings = settings
            self.calls = 0

        @http.GET("/")
        def count(self) -> dict:
            self.calls += 1
            return {"calls": self.calls, "controller": id(self), "settings": id(self.settings)}

    client = TestClient(App(controllers=[Counter], providers=[Settings]))
    first = client.get("/count").json
    second = client.get("/count").json
    assert first["calls"] == second["calls"] == 1
    assert first["settings"] == second["settings"]


def test_controller_constructor_may_take_the_event_and_request():
    class Controller:
        def __init__(self, event: HttpEvent, request: Request) -> None:
            self.path = event.route.path
            self.method = request.method

        @http.GET("/items/{id}")
        def show(self, id: int) -> dict:
            return {"path": self.path, "method": self.method, "id": id}

    response = TestClient(App(controllers=[Controller])).get("/items/3")
    assert response.json == {"path": "/items/{id}", "method": "GET", "id": 3}


def test_listener_class_is_built_once_with_its_dependencies():
    class Audit:
        built = 0

        def __init__(self, store: Store) -> None:
            type(self).built += 1
            self.store = store

        @listener(http_workflow.on_controller)
        def record(self, event: HttpEvent) -> None:
            self.store.items.append(event.route.name)

    @http.GET("/x")
    def x(store: Store) -> dict:
        return {"items": store.items}

    app = App(controllers=[x], listeners=[Audit], providers=[Store, Settings])
    client = TestClient(app)
    assert client.get("/x").json == {"items": ["x"]}
    assert client.get("/x").json == {"items": ["x", "x"]}
    assert Audit.built == 1


def test_listener_class_depending_on_a_request_scoped_service_is_a_configuration_error():
    class Needy:
        def __init__(self, unit: Unit) -> None:
            self.unit = unit

        @listener(http_workflow.on_auth)
        def check(self, event: HttpEvent) -> None:
            pass

    with pytest.raises(ConfigurationError, match="request-scoped"):
        App(listeners=[Needy], providers=[Provider(Unit, scope="request")])


# -- configuration errors ---------------------------------------------------------------------


def test_missing_provider_for_a_controller_parameter():
    @http.GET("/x")
    def x(mailer: Mailer) -> str:
        return ""

    with pytest.raises(ConfigurationError, match="Mailer"):
        App(controllers=[x])


def test_missing_provider_for_a_controller_constructor():
    class Controller:
        def __init__(self, mailer: Mailer) -> None:
            self.mailer = mailer

        @http.GET("/x")
        def x(self) -> str:
            return ""

    with pytest.raises(ConfigurationError, match="Mailer"):
        App(controllers=[Controller])


def test_missing_provider_for_a_service_dependency():
    with pytest.raises(ConfigurationError, match="Store: cannot inject parameter 'settings'"):
        App(providers=[Store])


def test_unannotated_constructor_parameter_is_a_configuration_error():
    class Loose:
        def __init__(self, thing) -> None:  # no annotation
            self.thing = thing

    with pytest.raises(ConfigurationError, match="'thing'"):
        App(providers=[Loose])


def test_dependency_cycle():
    with pytest.raises(ConfigurationError, match="dependency cycle: CycleA → CycleB → CycleA"):
        App(providers=[CycleA, CycleB])


def test_self_dependency_is_a_cycle():
    with pytest.raises(ConfigurationError, match="dependency cycle: Selfish → Selfish"):
        App(providers=[Selfish])


def test_singleton_depending_on_a_request_scoped_service():
    class Repository:
        def __init__(self, unit: Unit) -> None:
            self.unit = unit

    with pytest.raises(ConfigurationError, match="request-scoped"):
        App(providers=[Repository, Provider(Unit, scope="request")])


def test_singleton_depending_on_the_event_is_a_configuration_error():
    class Bad:
        def __init__(self, event: HttpEvent) -> None:
            self.event = event

    with pytest.raises(ConfigurationError, match="per request"):
        App(providers=[Bad])


def test_the_same_type_provided_twice():
    def make() -> Settings:
        return Settings()

    with pytest.raises(ConfigurationError, match="Settings is provided twice"):
        App(providers=[Settings, make])


def test_instance_and_class_of_the_same_type_provided_twice():
    with pytest.raises(ConfigurationError, match="provided twice"):
        App(providers=[Settings(), Provider(Settings, scope="request")])


def test_a_factory_error_at_request_time_is_a_logged_500(caplog):
    def make() -> Fragile:
        raise RuntimeError("database down")

    @http.GET("/x")
    def x(fragile: Fragile) -> str:
        return ""

    response = TestClient(App(controllers=[x], providers=[make])).get("/x")
    assert response.status_code == 500
    assert response.json == {"message": "Internal Server Error"}
    (record,) = caplog.records
    assert record.exc_info[1].args == ("database down",)


# -- singletons are built in the worker, not when the app is built --------------------------


class _Connection:
    """A singleton standing for a socket or a pool, which must never cross gunicorn's fork."""

    built: list[int] = []

    def __init__(self) -> None:
        _Connection.built.append(os.getpid())


class _UsesConnectionListener:
    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    @listener(http_workflow.on_request)
    def tag(self, event):
        event.store["connection"] = self.connection


class _UsesConnectionMiddleware:
    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def incoming(self, event):
        event.store["middleware_connection"] = self.connection


@http.GET("/connection")
def connection_route(event: HttpEvent) -> dict:
    return {
        "listener": event.store["connection"] is event.store["middleware_connection"],
    }


def test_listener_and_middleware_classes_build_their_singletons_on_first_use():
    # Fails on the old code: App() built the class, and so the singleton, at once, in the
    # process that imports the app (gunicorn's master, before the fork).
    _Connection.built.clear()
    app = App(
        controllers=[connection_route],
        providers=[_Connection],
        listeners=[_UsesConnectionListener],
        middlewares=[_UsesConnectionMiddleware],
    )
    assert _Connection.built == []
    client = TestClient(app)
    assert client.get("/connection").json == {"listener": True}
    assert client.get("/connection").json == {"listener": True}
    assert _Connection.built == [os.getpid()]  # once, shared by both classes


def test_a_listener_class_with_a_bad_method_signature_fails_when_the_app_is_built():
    class Bad:
        @listener(http_workflow.on_request)
        def check(self, event, extra): ...

    with pytest.raises(ConfigurationError, match=r"Bad\.check.*exactly one argument"):
        App(controllers=[connection_route], listeners=[Bad])


@http.GET("/with-event")
def takes_the_event(event: HttpEvent, name: str = "x") -> dict:
    return {"state": event.state, "name": name}


def test_a_controller_taking_the_event_leaves_no_cycle():
    # Fails on the old code: event.parameters held the event itself, so every such request
    # lived until the cyclic garbage collector ran.
    client = TestClient(App(controllers=[takes_the_event]))
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            assert client.get("/with-event").json == {"state": "controller", "name": "x"}
        alive = sum(isinstance(obj, HttpEvent) for obj in gc.get_objects())
    finally:
        gc.enable()
    assert alive == 0
