from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, Field

from slmops.core import Function, StepState, function
from slmops.errors import StepDefinitionError, StepExecutionError, StepInputError, StepOutputError


class Order(BaseModel):
    item: str
    quantity: int = Field(gt=0)


class Receipt(BaseModel):
    item: str
    total: float


def price(order: Order) -> Receipt:
    return Receipt(item=order.item, total=order.quantity * 2.5)


def test_types_come_from_annotations_and_dicts_validate():
    step = Function(price)
    assert (step.name, step.input_type, step.output_type) == ("price", Order, Receipt)
    assert step.run({"item": "tea", "quantity": 2}) == Receipt(item="tea", total=5.0)


def test_invalid_input_names_the_field_and_never_coerces():
    step = Function(price)
    with pytest.raises(StepInputError, match="input field 'quantity'") as missing:
        step.run({"item": "tea"})
    assert missing.value.field == "quantity" and missing.value.path == "price"
    with pytest.raises(StepInputError, match="quantity"):
        step.run({"item": "tea", "quantity": "2"})  # strict: a string is not an int
    with pytest.raises(StepInputError, match="greater than 0"):
        step.run({"item": "tea", "quantity": 0})


def test_invalid_output_names_the_field():
    def broken(order: Order) -> Receipt:
        return {"item": order.item}  # type: ignore[return-value]

    with pytest.raises(StepOutputError, match="output field 'total'") as info:
        Function(broken).run({"item": "tea", "quantity": 1})
    assert info.value.field == "total"


def test_custom_validators_on_both_sides():
    def no_free_tea(order: Order) -> None:
        if order.item == "tea" and order.quantity > 10:
            raise ValueError("at most 10 teas")

    def cheap(receipt: Receipt) -> bool:
        return receipt.total < 20

    step = Function(price, input_validators=[no_free_tea], output_validators=[cheap])
    assert step.run({"item": "tea", "quantity": 3}).total == 7.5
    with pytest.raises(StepInputError, match="rejected by no_free_tea: at most 10 teas"):
        step.run({"item": "tea", "quantity": 11})
    with pytest.raises(StepOutputError, match="rejected by cheap"):
        step.run({"item": "cake", "quantity": 9})


def test_unannotated_functions_need_explicit_types():
    with pytest.raises(StepDefinitionError, match="input type of 'lam' is unknown"):
        Function(lambda x: x, name="lam")
    step = Function(lambda x: x * 2, name="lam", input_type=int, output_type=int)
    assert step.run(4) == 8


def test_functions_must_take_one_argument():
    def two(a: int, b: int) -> int:
        return a + b

    with pytest.raises(StepDefinitionError, match="exactly one required argument"):
        Function(two)


def test_async_functions_and_decorator():
    @function(name="slow_double")
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    assert double.name == "slow_double"
    assert double.run(21) == 42


def test_user_exceptions_raise_with_the_step_path_and_keep_the_cause():
    def explode(x: int) -> int:
        raise KeyError("boom")

    with pytest.raises(StepExecutionError, match="step 'explode': KeyError") as info:
        Function(explode).run(1)
    assert isinstance(info.value.__cause__, KeyError)


def test_steps_are_immutable_and_with_options_copies():
    step = Function(price)
    with pytest.raises(AttributeError, match="immutable"):
        step.name = "other"
    cached = step.with_options(cache=True, version="2")
    assert (cached.cache, cached.version) == (True, "2")
    assert (step.cache, step.version) == (False, "1")
    with pytest.raises(StepDefinitionError, match="unknown option"):
        step.with_options(colour="red")


def test_invalid_names_are_refused():
    with pytest.raises(StepDefinitionError, match="step name"):
        Function(price, name="a/b")


def test_lifecycle_states_are_recorded_on_the_span(spans_of):
    result = Function(price).invoke({"item": "tea", "quantity": 1})
    span = spans_of(result.trace_id)["price"]
    states = [e["attributes"]["state"] for e in span["events"] if e["name"] == "state"]
    assert states == [
        StepState.INIT,
        StepState.INPUT_VALIDATED,
        StepState.RUNNING,
        StepState.OUTPUT_VALIDATED,
        StepState.COMPLETE,
    ]
    assert span["attributes"]["slmops.state"] == "complete"
    assert '"quantity":1' in span["attributes"]["slmops.input"]
    assert '"total":2.5' in span["attributes"]["slmops.output"]


def test_one_instance_runs_concurrently_without_sharing_state():
    async def echo(x: int) -> int:
        await asyncio.sleep(0.01 * (5 - x))
        return x

    step = Function(echo)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(step.arun(i) for i in range(5))))

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_run_inside_an_event_loop_points_to_arun():
    step = Function(price)

    async def main() -> None:
        step.run({"item": "tea", "quantity": 1})

    with pytest.raises(Exception, match="await arun"):
        asyncio.run(main())


def test_unresolvable_annotations_get_a_clear_error():
    class Local(BaseModel):
        x: int

    def use(v: Local) -> int:  # a string annotation naming a class local to this test
        return v.x

    with pytest.raises(StepDefinitionError, match="cannot be resolved.*Local"):
        Function(use)
