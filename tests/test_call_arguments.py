"""Call arguments as users pass them (issue 15, item 7): numpy integers are integers; a wrong generator or a
callback that returns something other than a dict is a ValueError naming it, not an AttributeError."""

import warnings

import numpy as np
import pytest
import torch


def latents_of(pipe, *args, **kwargs):
    return pipe(*args, output_type="latent", **kwargs).images


def test_a_numpy_array_of_labels_equals_the_list(tiny_pipeline):
    from_array = latents_of(tiny_pipeline, np.array([1, 2]), generator=torch.Generator().manual_seed(0))
    from_list = latents_of(tiny_pipeline, [1, 2], generator=torch.Generator().manual_seed(0))
    assert torch.equal(from_array, from_list)


@pytest.mark.parametrize("array, message", [
    (np.array([0.0, 1.0]), "class_labels array must hold integers in one dimension"),
    (np.array([[0, 1]]), "class_labels array must hold integers in one dimension"),
    (np.array([True]), "class_labels array must hold integers in one dimension"),
])
def test_a_numpy_array_of_anything_but_integers_is_refused(tiny_pipeline, array, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(array, output_type="latent")


@pytest.mark.parametrize("integer", [np.uint8, np.int32, np.int64])
def test_numpy_integer_scalars_act_as_ints(tiny_pipeline, integer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy arithmetic overflowing in the schedule maths warns
        from_numpy = latents_of(tiny_pipeline, integer(2), num_inference_steps=integer(5),
                                num_images_per_prompt=integer(2), generator=torch.Generator().manual_seed(0))
    from_ints = latents_of(tiny_pipeline, 2, num_inference_steps=5, num_images_per_prompt=2,
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(from_numpy, from_ints)


def test_numpy_step_counts_get_the_int_error(tiny_pipeline):
    with pytest.raises(ValueError, match="num_inference_steps 17 exceeds the 16 grid tokens"):
        tiny_pipeline(0, num_inference_steps=np.int64(17), output_type="latent")


@pytest.mark.parametrize("generator", [0, [0], "seed", [torch.Generator(), None]])
def test_a_generator_that_is_not_a_torch_generator_is_a_value_error(tiny_pipeline, generator):
    labels = [0] if not isinstance(generator, list) else [0] * len(generator)
    with pytest.raises(ValueError, match="generator must be None, a torch.Generator or a list of one torch.Generator "
                                         "per image"):
        tiny_pipeline(labels, generator=generator, output_type="latent")


@pytest.mark.parametrize("returned", [5, "latents", [1]])
def test_a_callback_returning_a_non_dict_is_a_value_error(tiny_pipeline, returned):
    with pytest.raises(ValueError, match="callback_on_step_end must return a dict"):
        tiny_pipeline(0, callback_on_step_end=lambda pipe, step, timestep, tensors: returned, output_type="latent")


def test_a_callback_returning_none_changes_nothing(tiny_pipeline):
    with_callback = latents_of(tiny_pipeline, [0, 1], generator=torch.Generator().manual_seed(0),
                               callback_on_step_end=lambda pipe, step, timestep, tensors: None)
    assert torch.equal(with_callback, latents_of(tiny_pipeline, [0, 1], generator=torch.Generator().manual_seed(0)))


def test_the_video_pipeline_takes_numpy_labels_too(tiny_video_pipeline):
    from_array = tiny_video_pipeline(np.array([0, 2]), num_videos_per_prompt=np.int64(1), output_type="latent",
                                     generator=torch.Generator().manual_seed(0)).frames
    from_list = tiny_video_pipeline([0, 2], output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert torch.equal(from_array, from_list)
